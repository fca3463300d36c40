"""When a run measures its metric on the held-out batch, so the lab can chart it beside the noisy training-batch one.

The held-out batch is fixed by the config's seed (EVAL_BATCH sequences that no training batch shares), and the
run's `final_metric` is measured on it after the last step. During training it is measured on the recorded
steps (`record_every`), thinned where one measurement would cost too much next to training: a forward pass over
512 sequences took 0.07–0.34 of what 512 sequences of a recorded training step cost (measured over RNN, LSTM
and GRU configs from 8 units × 4 layers × 1 000 time steps to 512 units × 2 layers), so a big model with a
small batch would otherwise spend most of its time on it. The schedule is the recorded steps every `every`
steps, where `every` is the smallest multiple of `record_every` that keeps the estimated held-out time within
HELDOUT_TIME_SHARE of the estimated training time and the points within MAX_HELDOUT_POINTS; the first
recorded step and the last step always count. It depends on the config only, so identical runs measure the
same steps.
"""

from __future__ import annotations

import math

from .budget import step_cost
from .config import RunConfig

EVAL_BATCH = 512  # held-out sequences: enough that accuracy moves in 0.2 % steps
EVAL_SEED_OFFSET = 1_000_003  # the held-out set never shares a generator state with training batches
EVAL_COST_SHARE = 0.35  # one held-out sequence's forward ÷ one sequence of a recorded step, an upper bound
HELDOUT_TIME_SHARE = 0.25
MAX_HELDOUT_POINTS = 200


def eval_seconds(config: RunConfig) -> float:
    """Estimated time of one held-out measurement on the reference machine."""
    return EVAL_COST_SHARE * EVAL_BATCH * step_cost(config).per_sequence_seconds


def heldout_every(config: RunConfig) -> int:
    """Steps between held-out measurements during training; 0 when the run records nothing per time step (it
    then measures after its last step only)."""
    if config.record_every == 0:
        return 0
    by_time = eval_seconds(config) / (HELDOUT_TIME_SHARE * step_cost(config).seconds)
    needed = max(1, math.ceil(by_time), math.ceil(config.steps / MAX_HELDOUT_POINTS))
    return config.record_every * math.ceil(needed / config.record_every)


def is_heldout_step(step: int, config: RunConfig, every: int | None = None) -> bool:
    """Whether the run measures the held-out metric after `step` (`every`: `heldout_every(config)`, if known)."""
    every = heldout_every(config) if every is None else every
    return step == config.steps or (every > 0 and (step == 1 or step % every == 0))


def heldout_steps(config: RunConfig) -> int:
    """How many held-out measurements a full run of `config` makes."""
    every = heldout_every(config)
    if every == 0:
        return 1
    return config.steps // every + (every != 1) + (config.steps % every != 0 and config.steps != 1)
