"""What a run's charts need to know besides its rows, whether the Lab trained it from a `RunConfig` or `watch`
recorded it in a user's own loop (no config: the facts then come from its `ModelDescription` and its rows).

A lab run knows its task (so its loss has a memoryless baseline and it has an accuracy), its clipping and its
batch; a watched run knows its recurrent modules, and only what its rows show of the rest."""

from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig
from .description import ModelDescription
from .heldout import heldout_every
from .model import task_of
from .tasks import Task

SMOOTHING_SHARE = 25  # the smoothing window is this share of the run's steps: 32 of 800, 4 000 of 100 000


@dataclass(frozen=True)
class ChartFacts:
    """`lanes[k]` names the rows whose `layer` is k (a lab layer, or one layer and direction of a watched
    module); `cells[k]` and `activations[k]` are that lane's cell and nonlinearity."""

    T: int  # time steps per sequence (a watched run's longest recorded one; 0 before any)
    lanes: tuple[str, ...]
    cells: tuple[str, ...]
    activations: tuple[str, ...]
    clip: str | None  # none, norm or value; None: not known (a user's own loop)
    clip_threshold: float | None
    task: Task | None  # the lab's task: the loss's memoryless baseline and the metric; None for a watched model
    batch_size: int | None
    heldout_every: int | None  # None: no held-out metric at all
    smoothing_steps: int
    watched: bool = False


def smoothing_steps(config: RunConfig) -> int:
    """The window of the smoothed training-batch metric: fixed by the config, so a live chart's legend (which
    names it) does not change while the run grows."""
    return max(1, config.steps // SMOOTHING_SHARE)


def lab_facts(config: RunConfig) -> ChartFacts:
    task = task_of(config)
    layers = range(config.num_layers)
    return ChartFacts(T=task.total_steps(), lanes=tuple(f"layer {k}" for k in layers),
                      cells=(config.cell,) * config.num_layers, activations=(config.activation,) * config.num_layers,
                      clip=config.clip, clip_threshold=config.clip_threshold, task=task,
                      batch_size=config.batch_size, heldout_every=heldout_every(config),
                      smoothing_steps=smoothing_steps(config))


def watched_facts(description: ModelDescription, longest: int) -> ChartFacts:
    """A watched run's facts; `longest` is the longest sequence its rows recorded (its batches may vary)."""
    lanes = description.lanes()
    return ChartFacts(T=max(longest, description.seq_len or 0), lanes=tuple(lane.name for lane in lanes),
                      cells=tuple(lane.module.cell for lane in lanes),
                      activations=tuple(lane.module.activation for lane in lanes),
                      clip=description.clip, clip_threshold=description.clip_threshold, task=None, batch_size=None,
                      heldout_every=None, smoothing_steps=1, watched=True)
