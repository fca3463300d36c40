"""The per-step budget: what one training step of a config would cost, and the refusal that names the fix."""

import pytest

from diagnostics import budget
from diagnostics.config import ConfigError, RunConfig
from diagnostics.runner import run_into_store
from diagnostics.store import Store
from diagnostics.tasks import make_task

HUGE = RunConfig(cell="lstm", hidden_size=512, batch_size=1024, seq_len=1000, num_layers=4)


def test_step_cost_counts_time_steps_batch_units_gate_blocks_and_layers():
    # agreement: T = seq_len + 2; its input is one-hot over the vocabulary
    config = RunConfig(cell="gru", hidden_size=10, batch_size=3, seq_len=5, num_layers=2)
    vocab = make_task("agreement", 5).input_size
    per_layer = 7 * 3 * 10 * 3
    cost = budget.step_cost(config)
    assert cost.values == 2 * per_layer
    assert cost.macs == per_layer * (10 * 2 + vocab + 10)  # W_hh of both layers, W_ih of layer 0 and of layer 1
    assert budget.step_cost(config.replace(cell="rnn")).values == 2 * 7 * 3 * 10
    assert budget.step_cost(config.replace(cell="lstm")).values == 2 * 7 * 3 * 10 * 4
    copy = budget.step_cost(config.replace(task="copy", seq_len=100))  # copy adds 2 × 10 steps to seq_len
    assert copy.values == 2 * 120 * 3 * 10 * 3


@pytest.mark.parametrize("config,gb,seconds", [
    (RunConfig(cell="lstm", hidden_size=512, batch_size=256, seq_len=200), 3.2, 20.3),
    (RunConfig(cell="lstm", hidden_size=32, batch_size=1024, seq_len=500), 2.0, 7.9),
    (RunConfig(cell="rnn", hidden_size=256, batch_size=256, seq_len=300, num_layers=2), 1.2, 6.7),
], ids=["lstm-H512", "lstm-B1024", "rnn-2-layers"])
def test_estimates_match_the_reference_measurements(config, gb, seconds):
    """The three recorded steps the constants were fitted to (see budget's docstring)."""
    cost = budget.step_cost(config)
    assert cost.gigabytes == pytest.approx(gb, abs=0.05) and cost.seconds == pytest.approx(seconds, abs=0.1)


def test_every_default_and_lesson_sized_config_fits():
    assert budget.too_big(RunConfig()) is None
    assert budget.too_big(RunConfig(cell="lstm", hidden_size=128, batch_size=128, seq_len=200)) is None


def test_too_big_says_what_it_needs_what_is_allowed_and_what_fits():
    message = budget.too_big(HUGE)
    assert message.startswith("this run is too big for one training step on this server: lstm with hidden_size "
                              "512 × num_layers 4 × batch_size 1024 × seq_len 1000 needs about 252 GB and 34 min")
    assert "(allowed: 4 GB and 20 s)" in message
    assert message.endswith("(with the other settings as they are, batch_size 9 fits)")
    assert budget.too_big(HUGE.replace(batch_size=9)) is None and budget.too_big(HUGE.replace(batch_size=10))


def test_one_sequence_of_the_largest_everything_fits_so_the_batch_hint_always_holds():
    for cell in ("rnn", "lstm", "gru"):
        for task in ("agreement", "adding", "copy"):
            assert budget.too_big(HUGE.replace(cell=cell, task=task, batch_size=1)) is None, (cell, task)


def test_a_too_big_run_is_refused_before_anything_is_stored(tmp_path):
    with Store(tmp_path / "runs.sqlite") as store:
        with pytest.raises(ConfigError, match=r"^This run is too big .* batch_size 9 fits\)$"):
            run_into_store(HUGE, store)
        assert store.list_runs() == []
