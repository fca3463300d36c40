"""Verdicts on real runs whose outcome is known (trained here, seeded): each rule is a problem on a run that shows
the harm and stays a note or silent on one that does not. The lessons' own runs are judged in test_lessons.py;
the labelled corpus with precision and recall is the benchmark `python -m bench --only D1`."""

import functools

import pytest

from diagnostics.config import RunConfig
from diagnostics.train import finish_diagnosis, train

FAR = RunConfig(hidden_size=32, seq_len=15, steps=800)


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def verdict(config: RunConfig):
    summary, data = train(config)
    finish_diagnosis(summary, data, config)
    return summary


def severities(summary) -> list[tuple[str, str, str]]:
    return [(d["severity"], d["kind"], d["rule"]) for d in summary.diagnoses]


def problems(summary) -> list[str]:
    return [d["rule"] for d in summary.diagnoses if d["severity"] == "problem"]


RUNS = {
    # (config, problems, notes that must be there too): outcome first, then what the verdict must say
    "copy-linear-explodes-to-nan": (
        RunConfig(task="copy", activation="linear", init="orthogonal", init_scale=1.2, clip="none", seq_len=20),
        ["nonfinite", "clip_spikes"], []),
    "tanh-adding-loss-runs-away-under-clipping": (
        RunConfig(init="normal", init_scale=2.0, lr=1.0, task="adding", seq_len=50, steps=300),
        ["loss_divergence", "weight_growth", "grad_above_one", "clip_spikes"], ["time_decay"]),
    "gru-weights-grow-without-bound": (
        RunConfig(cell="gru", clip="none", lr=20.0, steps=300), ["loss_divergence", "weight_growth", "clip_spikes"],
        ["saturation"]),
    "two-layer-lstm-learns-then-loses-it": (
        FAR.replace(cell="lstm", num_layers=2, seed=2), ["loss_divergence", "clip_spikes"], ["time_decay"]),
    "irnn-with-large-steps-dies": (FAR.replace(activation="relu", init="identity"), ["time_decay", "saturation"], []),
    "lstm-forget-bias-minus-2": (FAR.replace(cell="lstm", forget_bias=-2.0, seq_len=30, steps=300),
                                 ["time_decay"], []),
    "lstm-forget-bias-3-learns-adding-at-100": (
        RunConfig(cell="lstm", forget_bias=3.0, task="adding", seq_len=100, steps=800, optimizer="adam", lr=0.01,
                  hidden_size=32), [], ["clip_spikes"]),
    "gru-copies-10-symbols": (
        RunConfig(cell="gru", task="copy", seq_len=10, steps=1500, optimizer="adam", lr=0.01), [],
        ["weight_growth"]),
}


@pytest.mark.parametrize("config, expected, notes", RUNS.values(), ids=RUNS.keys())
def test_verdict_of_a_run_with_a_known_outcome(config, expected, notes):
    summary = verdict(config)
    assert problems(summary) == expected, severities(summary)
    noted = [d["rule"] for d in summary.diagnoses if d["severity"] == "note"]
    assert set(notes) <= set(noted), severities(summary)
    assert summary.learned == (not expected)
    for d in summary.diagnoses:
        assert bool(d["remedies"]) == (d["severity"] == "problem"), d
        for remedy in d["remedies"]:
            assert all(getattr(config, k) != v for k, v in remedy["changes"].items()), remedy


def test_the_issue_example_no_longer_calls_a_horizon_beyond_the_sequence_vanishing():
    """LSTM, forget bias 3, adding at T = 100: it learned, so no vanishing problem and a plain headline."""
    summary = verdict(RUNS["lstm-forget-bias-3-learns-adding-at-100"][0])
    assert summary.final_metric < 0.01
    assert summary.verdict.startswith("No problem: the model learned (held-out mse ")


def test_a_run_that_did_not_learn_with_a_healthy_gradient_gets_no_problem_but_says_so():
    """A GRU with update bias 1 on lesson 3's sentences stays at chance, yet 3.6 % of its gradient reaches the
    subject: not a vanishing problem, and the headline says what else may help."""
    summary = verdict(FAR.replace(cell="gru"))
    assert summary.final_metric < 0.6 and problems(summary) == []
    assert summary.learned is False
    assert summary.verdict.startswith("No exploding or vanishing problem, but the model did not clearly learn "
                                      "(held-out accuracy 50 %, against 50 % without the subject), although the "
                                      "gradient reaching the subject is ")
    assert summary.verdict.endswith("of the one at the verb: more steps or another learning rate may help.")


def test_headlines_name_the_problem_and_count_the_notes():
    summary = verdict(RUNS["two-layer-lstm-learns-then-loses-it"][0])
    assert summary.verdict == ("Problem: exploding gradients (the loss jumped back up and did not recover); "
                               "1 note.")
    summary = verdict(RUNS["lstm-forget-bias-minus-2"][0])
    assert summary.verdict == ("Problem: vanishing gradients (the gradient does not reach the subject and the "
                               "model did not learn).")


def test_a_run_that_overflows_at_its_first_forward_pass_is_offered_a_smaller_start_first():
    """W_hh at 30x an orthogonal matrix overflows before any update: clipping cannot help, a smaller init can."""
    config = RunConfig(activation="linear", init="orthogonal", init_scale=30.0, clip="none", seq_len=30, steps=5)
    summary = verdict(config)
    assert summary.status == "diverged" and summary.first_nonfinite["step"] == 1
    assert problems(summary)[0] == "nonfinite" and "first forward pass" in summary.diagnoses[0]["message"]
    assert summary.diagnoses[0]["remedies"][0]["changes"] == {"init": "default", "init_scale": 1.0}


def test_without_a_recorded_gradient_through_time_vanishing_is_not_judged():
    summary = verdict(FAR.replace(record_every=0))  # lesson 3's run, unrecorded: it still stays at chance
    assert summary.final_metric < 0.6 and problems(summary) == []
    assert summary.verdict.endswith("vanishing gradients cannot be judged: no gradient through time was recorded "
                                    "(record_every = 0).")


def test_a_run_stopped_early_is_not_called_vanishing_before_it_could_recover():
    """Lesson 4's LSTM, stopped at step 15: its gradient to the subject is still as small as at initialisation."""
    import threading

    config = FAR.replace(cell="lstm")
    stop = threading.Event()
    summary, data = train(config, stop=stop, on_step=lambda s: s.steps_done >= 15 and stop.set())
    finish_diagnosis(summary, data, config)
    assert summary.status == "stopped" and summary.steps_done == 15
    assert problems(summary) == []
    decay = next(d for d in summary.diagnoses if d["rule"] == "time_decay")
    assert decay["severity"] == "note" and "stopped before it could show whether the gradient recovers" in \
        decay["message"]
    assert summary.verdict.startswith("No exploding problem; the run was stopped before the model learned")
