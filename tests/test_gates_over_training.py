"""The Gates page's over-training view, on real lesson runs whose outcome is known, and its link handling."""

import pytest

from diagnostics import gates_over_training as got
from diagnostics.lessons import LESSONS
from diagnostics.runner import run_into_store
from diagnostics.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


def variant(slug: str, label: str):
    lesson = next(lesson for lesson in LESSONS if lesson.slug == slug)
    return next(v for v in lesson.variants if v.label == label).config


@pytest.fixture(scope="module")
def lesson_runs(tmp_path_factory):
    """Lesson 4's LSTM (learns the agreement over 15 words) and lesson 9's LSTM with forget bias 0 (does not)."""
    store = Store(tmp_path_factory.mktemp("lessons") / "runs.sqlite")
    runs = {}
    for name, config in (("learns", variant("lstm-remembers", "LSTM")),
                         ("forget bias 0", variant("forget-bias", "forget bias 0"))):
        runs[name] = (run_into_store(config, store).run_id, config)
    return store, runs


def history(store, run, seed):
    run_id, config = run
    frame = got.stored_training_frame(store, run_id, config, seed, 0)
    return frame.pivot(index="step", columns="series", values="value")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_lstm_that_learns_goes_from_a_coin_flip_to_the_right_verb_and_its_carrying_unit_keeps_more(
        lesson_runs, seed):
    store, runs = lesson_runs
    h = history(store, runs["learns"], seed)
    assert h.index.tolist() == [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 800]
    before, after = h.iloc[0], h.iloc[-1]
    for sentence in ("singular", "plural"):
        assert 0.4 < before[f"P(right verb), {sentence}"] < 0.6
        assert after[f"P(right verb), {sentence}"] > 0.95
    carrier = next(c for c in h.columns if c.startswith("forget gate after the subject, unit "))
    assert after[carrier] > before[carrier] + 0.05  # the unit that carries number forgets less once it has learned
    assert after[carrier] > after["forget gate after the subject, all units"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_lstm_with_forget_bias_0_stays_near_a_coin_flip_with_its_forget_gates_near_one_half(lesson_runs, seed):
    store, runs = lesson_runs
    h = history(store, runs["forget bias 0"], seed)
    for sentence in ("singular", "plural"):
        assert h[f"P(right verb), {sentence}"].between(0.35, 0.65).all()
    assert h["forget gate after the subject, all units"].between(0.45, 0.55).all()


def test_a_link_step_names_a_kept_step_or_falls_back_with_a_reason():
    kept = [0, 1, 2, 5, 10]
    assert got.chosen_step(kept, None) == (10, None) and got.chosen_step(kept, " ") == (10, None)
    assert got.chosen_step(kept, "5") == (5, None) and got.chosen_step(kept, " 0 ") == (0, None)
    step, note = got.chosen_step(kept, "4")
    assert step == 5 and note == ("This run kept no weights at step 4; it keeps them at steps 0, 1, 2, 5, 10. "
                                  "Showing the nearest, step 5.")
    assert got.chosen_step(kept, "3")[0] == 2  # a tie goes to the earlier step
    for bad in ("x", "1.5", "²", "-2", "9" * 13):
        step, note = got.chosen_step(kept, bad)
        assert step == 10 and "is not a training step: steps are whole numbers from 0" in note


def test_step_labels_name_the_initial_and_the_last_weights():
    assert got.step_label(0, 800) == "0 — initial weights, before training"
    assert got.step_label(50, 800) == "50" and got.step_label(800, 800) == "800 — last kept step"
