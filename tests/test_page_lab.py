"""Lab page through AppTest: controls from the config, URL round trip, a real run to its diagnosis."""

import re
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from diagnostics.config import RunConfig
from diagnostics.lessons import LESSONS
from diagnostics.links import share_query
from diagnostics.store import Store
from tests.apptest_charts import charts
from tests.markdown import shown

RUN_BUTTONS = {"Train", "Stop", "Pause", "Step", "Reset"}
SMALL = RunConfig(hidden_size=8, batch_size=8, seq_len=5, steps=8, record_every=2)
EXPLODE = RunConfig(activation="relu", init="normal", init_scale=3.0, clip="none", lr=1.0, seq_len=30,
                    hidden_size=16, batch_size=16, steps=20, record_every=5)


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "runs.sqlite"
    monkeypatch.setenv("GFL_DB", str(path))
    return path


def open_lab(query: str = "") -> AppTest:
    at = AppTest.from_file("../dashboard.py", default_timeout=60)
    for key, value in (pair.split("=", 1) for pair in query.split("&") if pair):
        at.query_params[key] = value
    at.switch_page("app_pages/lab.py")
    return at.run()


def run_until(at: AppTest, text: str, seconds: float = 120) -> AppTest:
    """Rerun the page (as its polling fragment would) until an alert contains `text`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alerts = [e.value for kind in ("success", "warning", "error", "info") for e in getattr(at, kind)]
        if any(text in a for a in alerts):
            return at
        time.sleep(0.3)
        at.run()
    pytest.fail(f"no alert with {text!r}; alerts: {alerts}")


def test_controls_are_built_from_the_config_fields(db):
    at = open_lab()
    assert not at.exception
    labels = {w.label for w in [*at.sidebar.selectbox, *at.sidebar.number_input]}
    assert {"Cell", "Activation", "Initialisation", "Init scale of W_hh", "Hidden units", "Learning rate",
            "Sequence length", "Clip threshold", "Seed"} <= labels
    assert at.sidebar.selectbox(key="cfg_cell").value == "rnn"
    assert "No run yet" in at.info[0].value


def test_a_link_sets_the_controls_and_the_url_follows_them(db):
    at = open_lab("cell=lstm&hidden_size=12&lr=0.05&seed=7")
    assert at.sidebar.selectbox(key="cfg_cell").value == "lstm"
    assert at.sidebar.number_input(key="cfg_hidden_size").value == 12
    assert at.sidebar.number_input(key="cfg_forget_bias").disabled is False
    at.sidebar.selectbox(key="cfg_cell").select("rnn").run()
    assert at.sidebar.number_input(key="cfg_forget_bias").disabled is True  # LSTM and GRU only
    assert RunConfig.from_query(dict(at.query_params)) == RunConfig(hidden_size=12, lr=0.05, seed=7)


def test_a_link_opened_in_the_same_tab_replaces_the_experiment_and_the_labs_own_address_does_not(db):
    at = open_lab("lesson=clipping")
    assert at.title[0].value.startswith("Lesson 2")
    at.toggle[0].set_value(True).run()  # show the controls
    at.sidebar.number_input(key="cfg_seed").set_value(5).run()  # the Lab writes its own address: not a new link
    assert at.sidebar.number_input(key="cfg_seed").value == 5 and at.query_params["seed"] == "5"
    at.query_params.clear()
    for key, value in (pair.split("=", 1) for pair in share_query(LESSONS[3]).split("&")):
        if key != "autorun":  # as Home's link for lesson 4 would open it, but without training here
            at.query_params[key] = value
    at.switch_page("app_pages/lab.py").run()
    assert at.title[0].value == f"Lesson 4: {LESSONS[3].title}"
    assert at.sidebar.selectbox(key="cfg_cell").value == "lstm"  # the controls hold the new experiment
    assert RunConfig.from_query(dict(at.query_params)) == LESSONS[3].variants[0].config
    at.switch_page("app_pages/home.py").run()
    at.query_params.clear()
    at.switch_page("app_pages/lab.py").run()  # back through the page menu: the session keeps its experiment
    assert at.title[0].value == f"Lesson 4: {LESSONS[3].title}"
    assert RunConfig.from_query(dict(at.query_params)) == LESSONS[3].variants[0].config


def test_bad_link_gets_a_message_and_the_defaults_and_does_not_train(db):
    at = open_lab("cell=transformer&seed=3&autorun=1")
    assert not at.exception
    assert "cell='transformer' is not valid; allowed: one of rnn, lstm, gru" in shown(at.error[0].value)
    assert at.sidebar.selectbox(key="cfg_cell").value == "rnn"
    assert "the Lab shows the default settings instead" in shown(at.error[0].value)
    assert "the run does not start by itself" in at.info[0].value
    assert "No run yet" in at.info[1].value and Store(db).list_runs() == []  # a bad link starts nothing


def test_settings_too_big_to_train_are_named_and_train_is_disabled_until_they_fit(db):
    at = open_lab("cell=lstm&hidden_size=512&batch_size=1024&seq_len=1000&autorun=1")
    assert not at.exception and len(at.error) == 1 and not at.warning  # said once, as the link's problem
    assert "The link's settings are shown, but this run is too big" in shown(at.error[0].value)
    assert "the run does not start by itself" in at.info[0].value
    train = next(b for b in at.button if b.label == "Train")
    assert train.disabled and Store(db).list_runs() == []
    at.sidebar.number_input(key="cfg_batch_size").set_value(100).run()
    assert "batch_size 100 × seq_len 1000 needs about 6.2 GB" in shown(at.warning[0].value)  # still too big, said again
    assert next(b for b in at.button if b.label == "Train").disabled
    at.sidebar.number_input(key="cfg_batch_size").set_value(50).run()  # one step fits; 300 of them do not
    assert "This run is too long for this server: 300 steps of lstm H512x1" in shown(at.warning[0].value)
    assert next(b for b in at.button if b.label == "Train").disabled  # the server would refuse it: Train says so
    fits = int(shown(at.warning[0].value).split("(about ")[1].split(" ")[0])
    at.sidebar.number_input(key="cfg_steps").set_value(fits + 1).run()
    assert "This run is too long for this server" in shown(at.warning[0].value)  # the most that fit, said
    at.sidebar.number_input(key="cfg_steps").set_value(fits).run()
    assert not at.warning, [w.value for w in at.warning]
    assert not next(b for b in at.button if b.label == "Train").disabled


def test_train_runs_to_charts_and_a_stored_run(db):
    at = open_lab(SMALL.to_query())
    next(b for b in at.button if b.label == "Train").click().run()
    run_until(at, "completed after 8 steps")
    assert not at.exception
    titles = [c["title"]["text"] if isinstance(c.get("title"), dict) else str(c.get("title")) for c in charts(at)]
    assert len(titles) == 9, titles
    loss = next(c for c in charts(at) if c["title"]["text"] == "Training loss")
    values = pd.concat(loss["datasets"].values())
    assert set(range(1, 9)) <= set(values["step"])  # every step's loss reached the chart
    [run] = Store(db).list_runs()
    assert (run.status, run.steps_done, RunConfig.from_dict(run.config)) == ("completed", 8, SMALL)


def test_divergence_shows_the_banner_and_a_remedy_starts_a_fixed_run(db):
    at = open_lab(EXPLODE.to_query() + "&autorun=1")
    run_until(at, "diverged")
    banner = next(e.value for e in at.error if "Non-finite values" in e.value)
    assert "first at step 2: tensor `hidden`, layer 0, time step" in banner
    remedy = next(b for b in at.button if b.label.startswith("Clip the gradient norm"))
    remedy.click().run()
    run_until(at, "Run 2 ")
    second = Store(db).get_run(2)
    # clipping at 1 with a learning rate that keeps a clipped step of SGD with momentum 0.9 within 1
    assert RunConfig.from_dict(second.config) == EXPLODE.replace(clip="norm", clip_threshold=1.0, lr=0.1)
    assert at.sidebar.selectbox(key="cfg_clip").value == "norm"  # the controls show the new experiment


def test_lesson_link_hides_the_controls_and_runs(db):
    lesson = LESSONS[0]
    at = open_lab(share_query(lesson, 0))
    assert at.title[0].value == f"Lesson {lesson.number}: {lesson.title}"
    assert not at.sidebar.selectbox  # lesson mode: controls hidden until asked for
    at.toggle[0].set_value(True).run()
    assert at.sidebar.selectbox(key="cfg_cell").value == lesson.variants[0].config.cell


def test_lesson_by_number_alone_opens_its_variant(db):
    lesson = LESSONS[6]  # sigmoid, tanh or ReLU
    at = open_lab(f"lesson={lesson.number}&variant=2")
    assert not at.exception and not at.error
    assert at.title[0].value == f"Lesson 7: {lesson.title}"
    assert f"**ReLU** — what to look for: {lesson.variants[2].expect}" == at.info[0].value
    [side_by_side] = [link.proto for link in at.get("page_link") if link.proto.page == "lesson"]
    assert (side_by_side.label, side_by_side.query_string) == ("All 3 variants of this lesson side by side",
                                                               "lesson=activations")
    at.toggle[0].set_value(True).run()
    assert RunConfig.from_query(dict(at.query_params)) == lesson.variants[2].config
    assert (at.query_params["lesson"], at.query_params["variant"]) == (lesson.slug, "2")
    [shared] = [c.value for c in at.code]  # the copy-link control replays the lesson's run
    assert shared.endswith("?" + share_query(lesson, 2).replace("&autorun=1", "") + "&autorun=1")


def test_bad_lesson_or_variant_is_named_with_what_is_allowed(db):
    at = open_lab("lesson=99&autorun=1")
    assert "Unknown lesson '99'; allowed: 1 (exploding-nan)" in shown(at.error[0].value)
    assert at.title[0].value == "Lab" and Store(db).list_runs() == []
    at = open_lab("lesson=3&variant=5")
    assert "Lesson 3 has no variant '5'; allowed: 0 (tanh RNN)" in shown(at.error[0].value)


def test_stored_run_opens_read_only_by_id_with_its_settings(db):
    from diagnostics.runner import run_into_store

    stored = SMALL.replace(cell="gru", seed=11)
    run_id = run_into_store(stored, Store(db)).run_id
    at = open_lab(f"run={run_id}")
    run_until(at, f"Run {run_id} completed")
    assert len(charts(at)) == 9
    assert at.sidebar.selectbox(key="cfg_cell").value == "gru"  # the controls show the run's settings
    assert RunConfig.from_query(dict(at.query_params)) == stored and at.query_params["run"] == str(run_id)
    assert len(Store(db).list_runs()) == 1  # opening a stored run trains nothing
    gates = next(link.proto for link in at.get("page_link") if link.proto.page == "gates")
    assert gates.query_string == f"run={run_id}"
    assert gates.label.endswith(f"kept at {len(Store(db).checkpoint_steps(run_id))} steps from 0 to {stored.steps}")


def test_unknown_run_gets_a_message(db):
    at = open_lab("run=42")
    assert "Run 42 cannot be opened: no run 42 is stored" in shown(at.error[0].value)
    assert "No run yet" in at.info[-1].value


def test_a_foreign_store_file_gets_a_message_not_a_traceback(tmp_path, monkeypatch):
    foreign = tmp_path / "notes.sqlite"
    foreign.write_text("my notes, not a run store")
    monkeypatch.setenv("GFL_DB", str(foreign))
    at = open_lab()
    assert not at.exception
    assert f"The run store cannot be opened: {foreign} is not a Gradient Flow Lab store" in shown(at.error[0].value)
    assert "Set GFL_DB to another file" in shown(at.error[0].value)
    assert foreign.read_text() == "my notes, not a run store"


def test_diagnosis_panel_says_first_whether_anything_harmed_the_run(db):
    """Lesson 2's cure: a green "No problem" first, its note collapsed, no remedy buttons. Lesson 3's failure: the
    headline, one orange box for the vanishing problem, remedy buttons with lesson 4's LSTM first."""
    from diagnostics.runner import run_into_store

    cure = run_into_store(LESSONS[1].variants[0].config, Store(db))
    at = open_lab(f"run={cure.run_id}")
    run_until(at, "No problem: the model learned")
    assert at.success[-1].value == cure.verdict
    assert [e.label for e in at.main.expander] == ["1 note: signals that did no harm to this run"]
    assert {b.label for b in at.button} == RUN_BUTTONS
    assert not any("-badge[**" in m.value for m in at.markdown)  # no red or orange box

    failure = run_into_store(LESSONS[2].variants[0].config, Store(db))
    at = open_lab(f"run={failure.run_id}")
    run_until(at, f"Run {failure.run_id} completed")
    texts = [m.value for m in at.markdown]
    assert f"**{failure.verdict}**" in texts and failure.verdict.startswith("Problem: vanishing gradients")
    assert ":orange-badge[**Vanishing gradients**: problem]" in texts and ":red-badge[" not in "".join(texts)
    remedies = [b.label for b in at.button if b.label not in RUN_BUTTONS]
    assert remedies[0] == "Use an LSTM: its cell state carries the gradient"
    assert sorted(remedies) == sorted(r["label"] for r in failure.diagnoses[0]["remedies"])  # once each


def test_a_run_stored_before_verdicts_had_severities_still_opens(db):
    """An older store's summary has no severity, verdict or learned: its diagnoses were all problems."""
    store = Store(db)
    run_id = store.create_run(SMALL.to_dict())
    old = {"kind": "exploding", "rule": "clip_spikes", "message": "The gradient norm jumped above 10x its median.",
           "evidence": {"count": 1},
           "remedies": [{"label": "Clip the gradient norm at 1", "changes": {"clip": "norm"}}]}
    store.finish(run_id, "completed", 0, {"diagnoses": [old], "final_metric": 0.5, "metric_name": "accuracy"})
    at = open_lab(f"run={run_id}")
    run_until(at, f"Run {run_id} completed")
    assert not at.exception
    texts = [m.value for m in at.markdown]
    assert "**1 problem(s) diagnosed.**" in texts and ":red-badge[**Exploding gradients**: problem]" in texts
    assert ":red[**clip spikes**] The gradient norm jumped above 10x its median." in texts
    assert "Clip the gradient norm at 1" in [b.label for b in at.button]


PAYLOADS = {"image": "![x](http://evil.example/p.png)", "link": "[click me](http://evil.example)",
            "autolink": "http://evil.example/a", "maths": "$x^2$", "colour": ":red[boo]",
            "html": "<img src=x onerror=alert(1)>"}


def unescaped(markdown: str) -> str:
    """The markdown an element holds with every backslash-escaped character taken out: what could still act."""
    return re.sub(r"\\.", "", markdown)


@pytest.mark.parametrize("key", ["cell", "run", "lesson", "unknown"])
@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_a_hostile_link_is_echoed_as_plain_text(db, key, payload):
    """Streamlit renders markdown in st.error and st.warning: a value from a link must not become an image the
    browser fetches, a link, maths or a colour inside our own boxes."""
    query = f"{payload}=1" if key == "unknown" else f"{key}={payload}"
    at = open_lab(query.replace("&", "%26") + "&autorun=1")
    assert not at.exception and Store(db).list_runs() == []
    said = [e.value for kind in ("error", "warning", "info", "markdown", "caption") for e in getattr(at, kind)]
    typed = payload.split("=")[0][:20]  # a key ends at its first "="
    problem = next(v for v in said if typed in shown(v))  # the link's part is named, as typed
    for value in said:
        active = unescaped(value)
        assert "](" not in active and "![" not in active and "http://" not in active, value
        assert "$x" not in active and ":red[" not in active and "<img" not in active, value
    assert "not" in shown(problem) or "unknown" in shown(problem).lower()


def test_an_interrupted_run_says_it_was_not_diagnosed(db):
    """Its process died before it finished: "no problem diagnosed" would claim a verdict nobody reached."""
    import subprocess
    import sys

    made = subprocess.run([sys.executable, "-c", "import sys; from diagnostics.store import Store; "
                           f"print(Store({str(db)!r}).create_run({SMALL.to_dict()!r}))"],
                          capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    run_id = int(made.stdout)
    at = open_lab(f"run={run_id}")
    run_until(at, f"Run {run_id} interrupted after 0 steps")
    assert not at.exception
    assert any(i.value.startswith("No diagnosis: the run's training process died after step 0") for i in at.info)
    assert not any("No exploding or vanishing" in e.value for kind in ("success", "info") for e in getattr(at, kind))


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_visitors_of_one_link_share_its_run_and_a_later_one_sees_it_stored(db):
    link = SMALL.replace(steps=2000, record_every=100).to_query() + "&autorun=1"
    teacher = open_lab(link)
    student = open_lab(link)
    assert not teacher.exception and not student.exception
    assert any("is being trained for another visitor: you are watching the same run" in c for c in captions(student))
    assert not any("another visitor" in c for c in captions(teacher))
    next(b for b in teacher.button if b.label == "Stop").click().run()  # the student still watches
    assert any(i.value.startswith("You left the run; 1 other visitor(s) are watching it, so it keeps training for "
                                  "them (") for i in teacher.info)
    teacher.run()  # the next redraw still says so, and offers to rejoin instead of an empty page
    assert any(i.value.startswith("You left the run; 1 other") for i in teacher.info)
    assert not any(i.value.startswith("No run yet") for i in teacher.info)
    next(b for b in teacher.button if b.label == "Watch it again").click().run()
    assert not next(b for b in teacher.button if b.label == "Stop").disabled  # watching the live run again
    assert not any(i.value.startswith("You left the run") for i in teacher.info)
    run_until(student, "completed after 2000 steps", seconds=300)
    [run] = Store(db).list_runs()
    assert run.status == "completed"
    latecomer = open_lab(link)
    assert any("was trained already: this is its stored run" in c for c in captions(latecomer))
    assert any(f"Run {run.id} completed after 2000 steps" in s.value for s in latecomer.success)
    assert len(Store(db).list_runs()) == 1  # opening it trained nothing
    next(b for b in latecomer.button if b.label == "Train a fresh run").click().run()
    run_until(latecomer, f"Run {run.id + 1} completed", seconds=300)
    assert [r.id for r in Store(db).list_runs()] == [run.id + 1, run.id]


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def progress_text(at: AppTest) -> str:
    return " | ".join(p.proto.text for p in at.get("progress"))


def test_the_starter_pauses_steps_and_resumes_a_shared_run_and_its_viewers_see_it_hold(db):
    link = SMALL.replace(steps=3000, record_every=100).to_query() + "&autorun=1"
    teacher = open_lab(link)
    student = open_lab(link)
    assert not button(teacher, "Pause").disabled and button(teacher, "Step").disabled  # step needs a pause
    assert button(student, "Pause").disabled and "only the visitor who started this run" in button(
        student, "Pause").help
    button(teacher, "Pause").click().run()
    assert not button(teacher, "Step").disabled and not button(teacher, "Resume").disabled
    wait_until = time.monotonic() + 30
    while not Store(db).list_runs() and time.monotonic() < wait_until:
        time.sleep(0.05)
    [run] = Store(db).list_runs()
    while f"Paused at step {Store(db).get_run(run.id).steps_done} " not in progress_text(teacher) \
            and time.monotonic() < wait_until:
        time.sleep(0.1)
        teacher.run()
    held = Store(db).get_run(run.id).steps_done
    assert f"Paused at step {held} / 3000 — it waits until Resume or Step" in progress_text(teacher)
    student.run()
    assert f"Paused at step {held} / 3000 — it waits until the visitor who started it" in progress_text(student)
    button(teacher, "Step").click().run()
    deadline = time.monotonic() + 30
    while Store(db).get_run(run.id).steps_done != held + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    while f"Paused at step {held + 1} " not in progress_text(teacher) and time.monotonic() < deadline:
        time.sleep(0.1)
        teacher.run()
    assert Store(db).get_run(run.id).steps_done == held + 1 and f"Paused at step {held + 1} " in progress_text(teacher)
    button(teacher, "Resume").click().run()
    run_until(teacher, "completed after 3000 steps", seconds=300)
    button(teacher, "Reset").click().run()  # the same experiment from step 0, as a fresh run
    run_until(teacher, f"Run {run.id + 1} completed after 3000 steps", seconds=300)
    assert [r.status for r in Store(db).list_runs()] == ["completed", "completed"]


def test_a_click_on_a_pause_button_drawn_before_the_run_held_does_not_resume_it(db):
    """The button acts as it was labelled: a second "Pause" click, sent before the page redrew "Resume", once
    resumed a run its first click had paused (CI's browser test)."""
    from ui.common import _manager_for

    teacher = open_lab(SMALL.replace(steps=100_000, record_every=100).to_query() + "&autorun=1")
    manager = _manager_for(str(db))
    live = manager.get(teacher.session_state.live_handle)
    assert manager.pause(live, teacher.session_state.session_id)  # the first click, acted on after this drawing
    deadline = time.monotonic() + 30
    while not live.held and time.monotonic() < deadline:
        time.sleep(0.05)
    held = live.steps_done
    button(teacher, "Pause").click().run()  # the page still showed "Pause"
    time.sleep(0.5)
    assert live.paused and live.held and live.steps_done == held
    assert f"Paused at step {held} / 100000" in progress_text(teacher)
    button(teacher, "Stop").click().run()
    run_until(teacher, "stopped after", seconds=60)


def test_the_scrubber_shows_the_profile_and_its_fit_at_any_recorded_step(db):
    from diagnostics.gradflow import time_gradient_fit
    from diagnostics.runner import run_into_store

    summary = run_into_store(SMALL.replace(steps=12, record_every=3), Store(db))
    at = open_lab(f"run={summary.run_id}")
    run_until(at, f"Run {summary.run_id} completed")
    slider = at.select_slider(key=f"scrub-{summary.run_id}")
    assert slider.options == ["1", "3", "6", "9", "12", "latest (step 12)"] and slider.value == "latest"
    profile = next(c for c in charts(at) if c["title"]["text"] == "Gradient back through time")
    assert any("at step 12, the latest with a finite profile" in shown(c.value) for c in at.caption)
    slider.set_value(3).run()
    assert any("at step 3, the step chosen below" in shown(c.value) for c in at.caption)
    profile = next(c for c in charts(at) if c["title"]["text"] == "Gradient back through time")
    measured = pd.concat(profile["datasets"].values()).query("line == 'measured'").sort_values("t")
    stored = Store(db).time_grads_at(summary.run_id, 3).query("layer == 0")
    assert measured["value"].tolist() == pytest.approx(stored["value"].tolist(), rel=1e-6)
    fit = time_gradient_fit(stored["value"])
    assert any(f"gain ×{fit.gain:.2f} per step" in shown(c.value) for c in at.caption)
