"""How big one training step may be: each field's own bounds keep it sane, but not their product.

Hidden 512 × batch 1024 × 1 000 time steps × 4 LSTM layers is allowed field by field, yet one step would keep
~250 GB of activations for backprop and run for hours on a 2-core CPU, taking the shared server down with it.
A run is refused before it starts (CLI, dashboard, share link) when its recorded step would exceed
`MAX_STEP_GB` or `MAX_STEP_SECONDS`; stored runs of any size still open. A public server also caps a run's whole
time and stored size (`over_run_limits`, with the limits of `diagnostics.limits`).

A recorded step's time is a fixed cost (optimiser, per-parameter recording), a cost per layer, a cost per cell
step (one time step of one layer: Python, autograd and per-time-step recording, whatever its size — what made a
4-layer, 1-unit LSTM on 1 000 time steps take 1.5 s a step), element-wise work per value kept for backprop,
multiply-adds, and the weights read once per time step and layer whatever the batch (why batch 1 is slow per
sequence). The constants are a minimax fit to B1's recorded steps over a seeded sample of the whole allowed
config space, measured twice on the 2-core reference machine with one PyTorch thread, plus four large steps
(LSTM H=512 B=256 T=202: 14 s, 3.2 GB; LSTM H=32 B=1024 T=502: 3.2 s, 2.0 GB; RNN H=256 B=256 T=302 × 2 layers:
2.7 s, 1.2 GB; GRU H=256 B=128 T=402 × 2 layers): 76 steps, measured ÷ estimated between 0.49 and 2.04. The same
config measured twice differed by up to 1.5× on this shared machine, so a fresh B1 run
(`python -m bench --only B1`) lands near 2–2.8× at its worst.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .cells import GATE_BLOCKS
from .checkpoints import checkpoint_steps, weights_bytes
from .config import ConfigError, RunConfig, sentence
from .model import task_of

BYTES_PER_VALUE = 30  # kept per (time step, sequence, unit, gate block): activations, gradients, statistics
SECONDS_PER_STEP = 3.4e-4
SECONDS_PER_LAYER = 2.8e-3
SECONDS_PER_CELL_STEP = {"rnn": 1.3e-4, "lstm": 4.4e-4, "gru": 1.9e-4}
SECONDS_PER_VALUE = 4.6e-8  # element-wise work per kept value
SECONDS_PER_MAC = 7.1e-11  # recurrent and input matmuls, forward and backward
SECONDS_PER_WEIGHT_READ = 3.4e-9  # per multiply-add of one sequence: the weights, read once per time step
MAX_STEP_GB = 4.0
MAX_STEP_SECONDS = 20.0


@dataclass(frozen=True)
class StepCost:
    """Estimated memory and time of one recorded training step of a config on the reference machine."""

    values: int  # kept for backprop: T × batch × layers × hidden × gate blocks
    macs: int  # multiply-adds of the matmuls: values × (hidden + input width)
    cell_steps: int  # T × layers
    layers: int
    batch: int
    cell: str

    @property
    def gigabytes(self) -> float:
        return self.values * BYTES_PER_VALUE / 1e9

    @property
    def per_sequence_seconds(self) -> float:
        """The part of the step that grows with the batch, per sequence in it."""
        return (self.values * SECONDS_PER_VALUE + self.macs * SECONDS_PER_MAC) / self.batch

    @property
    def fixed_seconds(self) -> float:
        """The part of the step that does not grow with the batch."""
        return (SECONDS_PER_STEP + self.layers * SECONDS_PER_LAYER + self.cell_steps * SECONDS_PER_CELL_STEP[self.cell]
                + self.macs / self.batch * SECONDS_PER_WEIGHT_READ)

    @property
    def seconds(self) -> float:
        return self.fixed_seconds + self.batch * self.per_sequence_seconds


def step_cost(config: RunConfig) -> StepCost:
    task = task_of(config)
    per_layer = task.total_steps() * config.batch_size * config.hidden_size * GATE_BLOCKS[config.cell]
    values = per_layer * config.num_layers
    # Layer 0 reads the task's input, the others the layer below; every layer multiplies its hidden state.
    macs = per_layer * (config.hidden_size * config.num_layers + task.input_size
                        + config.hidden_size * (config.num_layers - 1))
    return StepCost(values=values, macs=macs, cell_steps=task.total_steps() * config.num_layers,
                    layers=config.num_layers, batch=config.batch_size, cell=config.cell)


# Stored bytes per row, indexes included, measured on the reference machine (a 2 000-step run: 100 B per metrics
# row; 100 recorded steps at T = 200: 30 B per time_grads row and 46 B per gates row).
METRIC_ROW_BYTES = 100
TIME_GRAD_ROW_BYTES = 30
GATE_ROW_BYTES = 46
# Rows a step writes: metrics 15 + 20 per layer (+3 per layer on recorded steps: saturation, sigma_max, radius);
# on recorded steps also one time_grads row per (layer, t) and one gates row per (layer, gate, t).
METRIC_ROWS, METRIC_ROWS_PER_LAYER, RECORDED_METRIC_ROWS_PER_LAYER = 15, 20, 3
GATES_RECORDED = {"rnn": 0, "lstm": 4, "gru": 3}


def recorded_steps(config: RunConfig) -> int:
    """Steps that record per time step: the first and every `record_every`-th."""
    if config.record_every == 0:
        return 0
    return 1 + config.steps // config.record_every - (config.record_every == 1)


def run_bytes(config: RunConfig) -> int:
    """Estimated bytes the run adds to the store: its rows and its checkpoints."""
    task, layers = task_of(config), config.num_layers
    per_step = (METRIC_ROWS + METRIC_ROWS_PER_LAYER * layers) * METRIC_ROW_BYTES
    per_recorded = (RECORDED_METRIC_ROWS_PER_LAYER * layers * METRIC_ROW_BYTES
                    + layers * task.total_steps() * (TIME_GRAD_ROW_BYTES
                                                     + GATES_RECORDED[config.cell] * GATE_ROW_BYTES))
    from .heldout import heldout_steps  # it schedules by this module's estimates, so it imports this module
    return (config.steps * per_step + recorded_steps(config) * per_recorded + checkpoint_bytes(config)
            + heldout_steps(config) * METRIC_ROW_BYTES)


def checkpoint_bytes(config: RunConfig) -> int:
    """The float32 weights the run keeps: one checkpoint at each of its `checkpoint_steps`."""
    return weights_bytes(config) * len(checkpoint_steps(config))


def run_seconds(config: RunConfig) -> float:
    """Estimated training time of the whole run: every step costed as a recorded one (an upper bound), and its
    held-out measurements."""
    from .heldout import eval_seconds, heldout_steps  # see run_bytes
    return config.steps * step_cost(config).seconds + heldout_steps(config) * eval_seconds(config)


def over_run_limits(config: RunConfig, limits) -> str | None:
    """Why a public server's caps on one run's total time and stored size refuse `config`, with the largest
    number of steps that fits; None when it fits or the operator lifted the caps (`limits`: ServerLimits)."""
    over = _over(config, limits)
    if not over:
        return None
    fitting = _steps_that_fit(config, limits)
    return (f"this run is too long for this server: {config.steps} steps of {config.summary()} need "
            f"{' and '.join(over)}; use fewer steps (about {fitting} fit), a smaller model or sequence, or record "
            "less often (record_every)")


def _over(config: RunConfig, limits) -> list[str]:
    """What of `config` passes the caps, as the refusal names it; empty when it fits."""
    minutes, megabytes = run_seconds(config) / 60, run_bytes(config) / 1e6
    over = []
    if not limits.lifted("max_run_minutes") and minutes > limits.max_run_minutes:
        over.append(f"about {_duration(minutes * 60)} of training (allowed: {limits.max_run_minutes:g} min)")
    if not limits.lifted("max_run_megabytes") and megabytes > limits.max_run_megabytes:
        over.append(f"about {_amount(megabytes, 'MB')} in the store (allowed: {limits.max_run_megabytes:g} MB)")
    return over


def _steps_that_fit(config: RunConfig, limits) -> int:
    """The most steps (at least 1) with which `config` fits the caps: a search, since the held-out measurements
    and checkpoints make time and size grow in steps, not in proportion."""
    low, high = 1, config.steps
    while low < high:
        middle = (low + high + 1) // 2
        if _over(config.replace(steps=middle), limits):
            high = middle - 1
        else:
            low = middle
    return low


def too_big(config: RunConfig) -> str | None:
    """Why this config may not be trained here, with the largest batch size that would fit; None when it fits."""
    cost = step_cost(config)
    if cost.gigabytes <= MAX_STEP_GB and cost.seconds <= MAX_STEP_SECONDS:
        return None
    # Memory grows with batch_size, time partly: what does not (per time step, per weight read) may alone be too
    # much for the widest, deepest, longest configs, and then no batch size fits.
    by_time = (MAX_STEP_SECONDS - cost.fixed_seconds) / cost.per_sequence_seconds
    fitting_batch = math.floor(min(config.batch_size * MAX_STEP_GB / cost.gigabytes, by_time))
    hint = (f"with the other settings as they are, batch_size {fitting_batch} fits" if fitting_batch >= 1 else
            "even one sequence (batch_size 1) is too big with the other settings as they are")
    return (f"this run is too big for one training step on this server: {config.cell} with hidden_size "
            f"{config.hidden_size} × num_layers {config.num_layers} × batch_size {config.batch_size} × "
            f"seq_len {config.seq_len} needs about {_amount(cost.gigabytes, 'GB')} and {_duration(cost.seconds)} "
            f"per recorded step (allowed: {MAX_STEP_GB:g} GB and {MAX_STEP_SECONDS:g} s); make hidden_size, "
            f"num_layers, batch_size or seq_len smaller ({hint})")


def check(config: RunConfig) -> None:
    """Raise a ConfigError saying what to shrink when the config's step is too big to train here."""
    if (problem := too_big(config)) is not None:
        raise ConfigError(sentence(problem))


def _amount(value: float, unit: str) -> str:
    return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
