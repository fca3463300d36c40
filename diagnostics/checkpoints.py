"""Which training steps' weights a run keeps, so the Gates page can show a model before and after it learned.

Weights are kept at log-spaced steps — 0 (the initial weights), 1, 2, 5, 10, 20, 50, 100, … — and at the run's
last step: early steps are where a network changes fastest, and a 100 000-step run keeps 17 checkpoints.
A run's checkpoints, its last included, share `MAX_CHECKPOINT_BYTES`; a model too big for that keeps fewer, spread
over the same range, and always its initial and last weights (two, even when they alone pass it).
"""

from __future__ import annotations

from .cells import GATE_BLOCKS
from .config import RunConfig
from .model import task_of

MAX_CHECKPOINT_BYTES = 16_000_000


def weights_bytes(config: RunConfig) -> int:
    """The float32 weights of one checkpoint of `config`'s model."""
    task, hidden, blocks = task_of(config), config.hidden_size, GATE_BLOCKS[config.cell]
    inputs = [task.input_size] + [hidden] * (config.num_layers - 1)
    recurrent = sum(blocks * hidden * (width + hidden) + 2 * blocks * hidden for width in inputs)
    return 4 * (recurrent + task.output_size * (hidden + 1))


def checkpoint_steps(config: RunConfig) -> tuple[int, ...]:
    """The steps whose weights a run of `config` keeps, ascending; the last is `config.steps` (a run that ends
    early keeps the step it ended at instead, see `runner`)."""
    earlier = [0, *_one_two_five(config.steps)]
    room = max(2, MAX_CHECKPOINT_BYTES // weights_bytes(config))
    if len(earlier) + 1 > room:  # spread what fits over the same range, the initial weights kept
        last = len(earlier) - 1
        earlier = [earlier[round(i * last / (room - 2))] for i in range(room - 1)] if room > 2 else [0]
    return (*sorted(set(earlier)), config.steps)


def _one_two_five(steps: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, 100, … below `steps`."""
    found, decade = [], 1
    while decade < steps:
        found += [s for s in (decade, 2 * decade, 5 * decade) if s < steps]
        decade *= 10
    return found
