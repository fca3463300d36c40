"""How big one training step may be: each field's own bounds keep it sane, but not their product.

Hidden 512 × batch 1024 × 1 000 time steps × 4 LSTM layers is allowed field by field, yet one step would keep
~250 GB of activations for backprop and run for hours on a 2-core CPU, taking the shared server down with it.
A run is refused before it starts (CLI, dashboard, share link) when its recorded step would exceed
`MAX_STEP_GB` or `MAX_STEP_SECONDS`; stored runs of any size still open.

The estimate counts the values each time step keeps per layer (batch × hidden × gate blocks) and the
multiply-adds of its recurrent matmul; the constants were fitted to recorded steps measured on the 2-core
reference machine with one PyTorch thread (LSTM H=512 B=256 T=202: 20 s, 3.2 GB; LSTM H=32 B=1024 T=502:
7.3 s, 2.0 GB; RNN H=256 B=256 T=302 × 2 layers: 6.6 s, 1.3 GB), within a factor of about 1.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import ConfigError, RunConfig
from .model import task_of

GATE_BLOCKS = {"rnn": 1, "lstm": 4, "gru": 3}  # blocks of `hidden_size` rows in W_hh
BYTES_PER_VALUE = 30  # kept per (time step, sequence, unit, gate block): activations, gradients, statistics
SECONDS_PER_VALUE = 1.1e-7  # element-wise work per kept value
SECONDS_PER_MAC = 1.5e-10  # recurrent and input matmuls, forward and backward
MAX_STEP_GB = 4.0
MAX_STEP_SECONDS = 20.0


@dataclass(frozen=True)
class StepCost:
    """Estimated memory and time of one recorded training step of a config on the reference machine."""

    values: int  # kept for backprop: T × batch × layers × hidden × gate blocks
    macs: int  # multiply-adds of the matmuls: values × (hidden + input width)

    @property
    def gigabytes(self) -> float:
        return self.values * BYTES_PER_VALUE / 1e9

    @property
    def seconds(self) -> float:
        return self.values * SECONDS_PER_VALUE + self.macs * SECONDS_PER_MAC


def step_cost(config: RunConfig) -> StepCost:
    task = task_of(config)
    per_layer = task.total_steps() * config.batch_size * config.hidden_size * GATE_BLOCKS[config.cell]
    values = per_layer * config.num_layers
    # Layer 0 reads the task's input, the others the layer below; every layer multiplies its hidden state.
    macs = per_layer * (config.hidden_size * config.num_layers + task.input_size
                        + config.hidden_size * (config.num_layers - 1))
    return StepCost(values=values, macs=macs)


def too_big(config: RunConfig) -> str | None:
    """Why this config may not be trained here, with the largest batch size that would fit; None when it fits."""
    cost = step_cost(config)
    if cost.gigabytes <= MAX_STEP_GB and cost.seconds <= MAX_STEP_SECONDS:
        return None
    # Cost is linear in batch_size, and within the fields' bounds one sequence always fits (a test checks it).
    fitting_batch = math.floor(config.batch_size / max(cost.gigabytes / MAX_STEP_GB, cost.seconds / MAX_STEP_SECONDS))
    return (f"this run is too big for one training step on this server: {config.cell} with hidden_size "
            f"{config.hidden_size} × num_layers {config.num_layers} × batch_size {config.batch_size} × "
            f"seq_len {config.seq_len} needs about {_amount(cost.gigabytes, 'GB')} and {_duration(cost.seconds)} "
            f"per recorded step (allowed: {MAX_STEP_GB:g} GB and {MAX_STEP_SECONDS:g} s); make hidden_size, "
            f"num_layers, batch_size or seq_len smaller (with the other settings as they are, batch_size "
            f"{fitting_batch} fits)")


def check(config: RunConfig) -> None:
    """Raise a ConfigError saying what to shrink when the config's step is too big to train here."""
    if (problem := too_big(config)) is not None:
        raise ConfigError(problem[0].upper() + problem[1:])


def _amount(value: float, unit: str) -> str:
    return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
