"""The side-by-side lesson page through AppTest, on a real store: stored variants are shown, not trained again."""

import time

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from diagnostics.lessons import LESSONS, lesson
from diagnostics.runner import run_into_store
from diagnostics.store import Store
from tests.apptest_charts import charts
from tests.markdown import shown

pytestmark = pytest.mark.usefixtures("one_thread")


def open_lesson(monkeypatch, db, slug: str | None) -> AppTest:
    monkeypatch.setenv("GFL_DB", str(db))
    at = AppTest.from_file("../dashboard.py", default_timeout=60)
    at.switch_page("app_pages/lesson.py")
    if slug is not None:
        at.query_params["lesson"] = slug
    return at.run()


def test_a_lesson_whose_variants_are_stored_shows_them_overlaid_and_trains_nothing(monkeypatch, tmp_path):
    db = tmp_path / "runs.sqlite"
    store = Store(db)
    chosen = lesson("weight-decay")
    ids = [run_into_store(v.config, store).run_id for v in chosen.variants]
    at = open_lesson(monkeypatch, db, chosen.slug)
    assert not at.exception and not at.error
    assert at.title[0].value == f"Lesson 8: {chosen.title}"
    assert [s.value for s in at.success] == [f"Run {i} completed after 300 steps · held-out accuracy 100 % · "
                                             f"{store.get_run(i).summary['train_seconds']:.1f} s" for i in ids]
    titles = [c["title"]["text"] for c in charts(at)]
    assert titles == ["weight norm ‖W‖ of the variants", "held-out metric of the variants",
                      "L2 weight penalty of the variants", "Gradient back through time (layer 0)"]
    heldout = pd.concat(charts(at)[1]["datasets"].values())
    assert set(heldout["run"]) == {v.label for v in chosen.variants}
    assert [r.id for r in Store(db).list_runs()] == ids[::-1]  # nothing trained again
    labs = [link.proto for link in at.get("page_link") if link.proto.query_string.startswith("run=")]
    assert [link.query_string for link in labs] == [f"run={i}" for i in ids]


@pytest.mark.parametrize("slug, says", [
    ("nope", "Unknown lesson 'nope'; allowed: 1 (exploding-nan)"),
    ("![x](http://example.invalid/p.png)", "Unknown lesson '![x](http://example.invalid/p.png)'"),
])
def test_an_unknown_lesson_says_which_exist_and_starts_nothing(monkeypatch, tmp_path, slug, says):
    at = open_lesson(monkeypatch, tmp_path / "runs.sqlite", slug)
    assert not at.exception
    assert shown(at.error[0].value).startswith(says)
    assert "![" not in at.error[0].value and "](" not in at.error[0].value  # escaped: no image, no link
    links = [link.proto.query_string for link in at.get("page_link")]
    assert links == [f"lesson={item.slug}" for item in LESSONS if len(item.variants) > 1]
    assert Store(tmp_path / "runs.sqlite").list_runs() == []


def test_without_a_lesson_the_page_lists_the_lessons_with_variants(monkeypatch, tmp_path):
    at = open_lesson(monkeypatch, tmp_path / "runs.sqlite", None)
    assert not at.exception and not at.error
    assert at.title[0].value == "Lessons side by side"
    assert len(at.get("page_link")) == sum(len(item.variants) > 1 for item in LESSONS)


def test_the_scrubber_shows_every_variant_at_the_chosen_step(monkeypatch, tmp_path):
    db = tmp_path / "runs.sqlite"
    store = Store(db)
    chosen = lesson("weight-decay")
    ids = {v.label: run_into_store(v.config, store).run_id for v in chosen.variants}
    at = open_lesson(monkeypatch, db, chosen.slug)
    slider = at.select_slider(key="lesson-scrub")
    assert slider.value == "latest" and slider.options[:3] == ["latest", "1", "10"]
    slider.set_value(100).run()
    assert not at.exception
    profile = next(c for c in charts(at) if c["title"]["text"] == "Gradient back through time (layer 0)")
    rows = pd.concat(profile["datasets"].values())
    assert set(rows["step"]) == {100} and set(rows["run"]) == set(ids)
    for label, run_id in ids.items():
        stored = store.time_grads_at(run_id, 100).query("layer == 0")
        assert rows[rows["run"] == label]["value"].tolist() == stored["value"].tolist()
    assert any("nearest the chosen one" in shown(c.value) for c in at.caption)
    assert all(b.disabled for b in at.button if b.label in ("Pause all", "Step all"))  # nothing trains


def test_pause_all_holds_every_variant_step_all_takes_one_step_each_and_resume_all_goes_on(monkeypatch, tmp_path):
    db = tmp_path / "runs.sqlite"
    at = open_lesson(monkeypatch, db, "irnn")
    store = Store(db)
    deadline = time.monotonic() + 60
    while len(store.list_runs()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    button = next(b for b in at.button if b.label == "Pause all")
    assert not button.disabled
    button.click().run()
    runs = store.list_runs()

    def held_at() -> list[int] | None:
        """Each variant's step once two reads a second apart agree (held), else None."""
        first = [store.get_run(r.id).steps_done for r in runs]
        time.sleep(1.0)
        return first if first == [store.get_run(r.id).steps_done for r in runs] else None

    while (held := held_at()) is None and time.monotonic() < deadline:
        pass
    assert held is not None and all(0 < s < 800 for s in held)
    at.run()
    assert [b.label for b in at.button if b.label.endswith(" all")] == ["Resume all", "Step all"]
    assert sorted(i.value for i in at.info if i.value.startswith("Paused")) == sorted(
        f"Paused at step {s} / 800" for s in held)
    next(b for b in at.button if b.label == "Step all").click().run()
    while [store.get_run(r.id).steps_done for r in runs] != [s + 1 for s in held] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [store.get_run(r.id).steps_done for r in runs] == [s + 1 for s in held]
    next(b for b in at.button if b.label == "Resume all").click().run()
    while any(store.get_run(r.id).status == "running" for r in runs) and time.monotonic() < deadline + 120:
        time.sleep(0.2)
    assert [store.get_run(r.id).status for r in runs] == ["completed", "completed"]
