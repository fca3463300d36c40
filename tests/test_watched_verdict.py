"""Verdicts of watched runs, on real runs whose outcome is known: only harm that needs no task is a problem, a
fading gradient is a note, and remedies are the lines to change in the user's script."""

import numpy as np
import pytest
import torch
from torch import nn

from diagnostics import watch
from diagnostics.watched_verdict import lane_reach
from tests.test_watched_lab import example_run
from diagnostics.store import Store


def regression(name, *, cell=nn.RNN, lr=0.01, clip=None, T=60, steps=120, identity=None, act="tanh", seed=0):
    """A one-unit-input RNN asked at its last step for its first input: a dependency over all T steps."""
    torch.manual_seed(seed)
    model = nn.Module()
    model.rnn = cell(1, 32, nonlinearity=act) if cell is nn.RNN else cell(1, 32)
    model.head = nn.Linear(32, 1)
    if identity is not None:
        with torch.no_grad():
            model.rnn.weight_hh_l0.copy_(torch.eye(32) * identity)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    with watch(model, every=10, name=name) as w:
        for _ in range(steps):
            x = torch.randn(T, 16, 1, generator=generator)
            out, _ = model.rnn(x)
            loss = (model.head(out[-1]).squeeze(-1) - x[0, :, 0]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            w.step(loss)
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
    return w.summary


def rules(summary) -> dict[str, str]:
    return {d["rule"]: d["severity"] for d in summary.diagnoses}


def codes(summary, rule) -> list[str]:
    return [r["code"] for d in summary.diagnoses if d["rule"] == rule for r in d["remedies"]]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    db = tmp_path_factory.mktemp("verdicts") / "runs.sqlite"
    exploded, clipped = example_run(db, "--no-clip"), example_run(db)
    with Store(db, create=False) as store:
        return store.get_run(exploded), store.get_run(clipped)


def test_the_unclipped_example_is_an_exploding_problem_located_by_lane_with_clipping_first(examples):
    exploded = examples[0].summary
    first = exploded["first_nonfinite"]
    assert exploded["verdict"].startswith("Problem: exploding gradients (a value went non-finite)")
    [nonfinite] = [d for d in exploded["diagnoses"] if d["rule"] == "nonfinite"]
    assert nonfinite["severity"] == "problem" and nonfinite["evidence"]["step"] == first["step"]
    assert nonfinite["evidence"]["module"] == "lstm" and f"lstm layer {first['layer']}" in nonfinite["message"]
    assert nonfinite["remedies"][0]["code"] == ("w.step(loss)\ntorch.nn.utils.clip_grad_norm_(model.parameters(), 1)"
                                                "\noptimizer.step()")
    assert nonfinite["message"].startswith(f"A value became non-finite: at step {first['step']} ")
    assert "nn.LSTM" not in " ".join(r["code"] for r in nonfinite["remedies"])  # it is one already
    assert exploded["learned"] is None


def test_the_clipped_example_has_no_problem_and_its_reverse_head_lane_is_not_called_faded(examples):
    clipped = examples[1].summary
    assert clipped["verdict"].startswith("No exploding problem: the loss went from ")
    assert all(d["severity"] == "note" for d in clipped["diagnoses"])
    assert "without a task" in clipped["verdict"]
    faded = [lane["lane"] for d in clipped["diagnoses"] if d["rule"] == "time_decay" for lane in d["evidence"]["lanes"]]
    # The head reads the reverse direction of layer 1 at its first processed step: its gradient enters at t = 1.
    assert "lstm layer 1 reverse" not in faded


def test_a_tanh_rnn_over_sixty_steps_gets_a_fading_note_and_no_problem():
    summary = regression("tanh-T60")
    assert rules(summary) == {"time_decay": "note"}
    [lane] = summary.diagnoses[0]["evidence"]["lanes"]
    assert lane["lane"] == "rnn layer 0" and lane["share"] < 1e-6 and lane["largest_at"] == 60 and lane["horizon"] < 20
    assert summary.verdict.startswith("No exploding problem: the loss went from ")


def test_a_loss_that_runs_away_under_clipping_is_a_problem_with_the_remedies_in_the_lab_order():
    summary = regression("big-lr", lr=5.0, clip=1.0, T=10, steps=150)
    assert rules(summary)["loss_divergence"] == "problem"
    assert summary.verdict.startswith("Problem: exploding gradients (the loss ran away)")
    [diagnosis] = [d for d in summary.diagnoses if d["rule"] == "loss_divergence"]
    assert diagnosis["evidence"]["end"] >= 10 * diagnosis["evidence"]["first"]
    assert [r["label"].split(" ")[0] for r in diagnosis["remedies"]] == ["Clip", "Lower", "Use"]
    [to_lstm] = [code for code in codes(summary, "loss_divergence") if "nn.LSTM" in code]
    model = nn.Module()
    model.rnn = nn.RNN(3, 5, num_layers=2, batch_first=True, dropout=0.1)
    exec(to_lstm, {"nn": nn, "model": model})  # the lines run as written, on the user's own model
    assert isinstance(model.rnn, nn.LSTM) and (model.rnn.input_size, model.rnn.hidden_size) == (3, 5)
    assert (model.rnn.num_layers, model.rnn.batch_first, model.rnn.dropout) == (2, True, 0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    [lower] = [code for code in codes(summary, "loss_divergence") if "param_groups" in code]
    exec(lower, {"optimizer": optimizer})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_an_overflow_of_the_untrained_forward_pass_puts_the_initial_weights_first():
    summary = regression("relu-identity-2", act="relu", identity=2.0, T=200, steps=3)
    first = summary.first_nonfinite
    assert first["step"] == 1 and first["tensor"] == "hidden" and first["module"] == "rnn"
    [diagnosis] = [d for d in summary.diagnoses if d["rule"] == "nonfinite"]
    assert "That was the first step watch saw, before any update" in diagnosis["message"]
    orthogonal = diagnosis["remedies"][0]["code"]
    model = nn.Module()
    model.rnn = nn.RNN(1, 6)
    exec(orthogonal, {"torch": torch, "model": model})
    singular = torch.linalg.svdvals(model.rnn.weight_hh_l0.detach())
    assert singular.tolist() == pytest.approx([1.0] * 6, abs=1e-5)


def test_lane_reach_follows_the_gradient_from_where_the_loss_reads_the_lane():
    forward = [1e-6, 1e-4, 1e-2, 1.0]  # read at its last step
    assert lane_reach(forward) == (pytest.approx(1e-6), 4, 1)
    reverse = forward[::-1]  # read at its first processed step: nothing flows back past t = 1
    assert lane_reach(reverse) == (1.0, 1, 0)
    assert lane_reach(list(np.full(5, 0.3))) == (1.0, 1, 0)
