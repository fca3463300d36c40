"""The side-by-side lesson page through AppTest, on a real store: stored variants are shown, not trained again."""

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
    assert titles == ["weight norm ‖W‖ of the compared runs", "held-out metric of the compared runs",
                      "L2 weight penalty of the compared runs", "Gradient back through time (layer 0)"]
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
