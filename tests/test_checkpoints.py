"""The weights a run keeps over training: which steps, how many bytes, and that they are the weights of that step."""

import pytest
import torch

from diagnostics import budget
from diagnostics.checkpoints import MAX_CHECKPOINT_BYTES, checkpoint_steps, weights_bytes
from diagnostics.config import RunConfig
from diagnostics.model import build
from diagnostics.runner import load_trained_model, run_into_store
from diagnostics.store import Store

SMALL = dict(hidden_size=8, batch_size=8, seq_len=5)


@pytest.mark.parametrize("steps, expected", [
    (1, (0, 1)), (2, (0, 1, 2)), (5, (0, 1, 2, 5)), (6, (0, 1, 2, 5, 6)),
    (800, (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 800)),
    (100_000, (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000)),
])
def test_a_small_model_keeps_its_weights_at_one_two_five_steps_and_its_last(steps, expected):
    assert checkpoint_steps(RunConfig(steps=steps)) == expected


def test_a_big_model_keeps_fewer_checkpoints_spread_over_training_within_the_bound():
    config = RunConfig(cell="lstm", hidden_size=256, num_layers=2, steps=100_000)
    one = weights_bytes(config)
    kept = checkpoint_steps(config)
    assert kept[0] == 0 and kept[-1] == 100_000 and list(kept) == sorted(set(kept))
    assert len(kept) == MAX_CHECKPOINT_BYTES // one == 4  # as many as fit, not all 17
    assert kept == (0, 200, 50_000, 100_000)  # spread evenly over the log-spaced steps, not only their start
    huge = RunConfig(cell="lstm", hidden_size=512, num_layers=4, task="copy", steps=1000)
    assert weights_bytes(huge) > MAX_CHECKPOINT_BYTES / 2 and checkpoint_steps(huge) == (0, 1000)


def test_weights_bytes_is_the_models_float32_parameters():
    for config in (RunConfig(cell="lstm", num_layers=2), RunConfig(cell="gru", task="copy"), RunConfig()):
        model, _ = build(config)
        assert weights_bytes(config) == 4 * sum(p.numel() for p in model.parameters())
        assert budget.checkpoint_bytes(config) == weights_bytes(config) * len(checkpoint_steps(config))


def test_each_kept_checkpoint_holds_the_weights_of_that_step(tmp_path):
    """Training is deterministic, so the weights kept at step k of a 6-step run are the last weights of the
    same config trained for k steps, and step 0's are the initial weights."""
    store = Store(tmp_path / "runs.sqlite")
    config = RunConfig(cell="lstm", steps=6, **SMALL)
    run_id = run_into_store(config, store).run_id
    assert store.checkpoint_steps(run_id) == [0, 1, 2, 5, 6]
    initial, _ = build(config)
    model, step = load_trained_model(store, run_id, 0)
    assert step == 0
    for name, value in initial.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    short = run_into_store(RunConfig(cell="lstm", steps=5, **SMALL), store).run_id
    at_five, _ = load_trained_model(store, run_id, 5)
    last_of_short, step = load_trained_model(store, short)
    assert step == 5
    for name, value in last_of_short.state_dict().items():
        assert torch.equal(at_five.state_dict()[name], value), name
    assert load_trained_model(store, run_id, 3) is None  # not kept
    assert load_trained_model(store, run_id)[1] == 6


def test_a_diverged_run_keeps_its_checkpoints_before_the_divergence_and_the_step_it_ended_at(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    config = RunConfig(cell="rnn", activation="relu", init="normal", init_scale=3.0, clip="none", lr=1.0,
                       hidden_size=8, seq_len=30, steps=50)
    summary = run_into_store(config, store)
    assert summary.status == "diverged" and summary.steps_done < 50
    kept = store.checkpoint_steps(summary.run_id)
    assert kept[-1] == summary.steps_done
    assert kept[:-1] == [s for s in checkpoint_steps(config) if s < summary.steps_done]


def test_the_store_reads_one_kept_step_or_the_latest(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    run = store.create_run({"a": 1})
    assert store.checkpoint_steps(run) == []
    for step in (5, 0, 9):
        store.save_checkpoint(run, step, f"w{step}".encode())
    assert store.checkpoint_steps(run) == [0, 5, 9]
    assert store.load_checkpoint(run, 5) == (5, b"w5") and store.load_checkpoint(run, 0) == (0, b"w0")
    assert store.load_checkpoint(run) == (9, b"w9") and store.load_checkpoint(run, 7) is None
