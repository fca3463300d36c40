"""The training loop's fixed vocabulary of events, and the state its handlers see.

A loop (the lab's `train`, or `watch` inside a user's own loop) fires these in order for every step; recording,
the non-finite policy, the summary, checkpoints and progress are handlers, so both loops share them. A handler
overrides only the events it needs; handlers run in the order they were given."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .rundata import StepRows

EVENTS = ("before_step", "after_backward", "after_clip", "on_nonfinite", "after_step", "after_fit")


class Callback:
    """A handler of the loop's events; every method does nothing unless a handler overrides it."""

    def before_step(self, fit: "Fit", step: "Step") -> None:
        """Before the batch is drawn; setting `fit.summary.status` (e.g. "stopped") ends the loop before this step."""

    def after_backward(self, fit: "Fit", step: "Step") -> None:
        """Gradients are in every parameter's `.grad`, not yet clipped; `step.loss` and `step.grad_norms` are set."""

    def after_clip(self, fit: "Fit", step: "Step") -> None:
        """Clipping is applied and `step.values` holds the step's scalars as Python floats (one transfer)."""

    def on_nonfinite(self, fit: "Fit", step: "Step") -> None:
        """The loss, the penalty or a gradient norm is NaN/Inf; the optimiser step will not be taken."""

    def after_step(self, fit: "Fit", step: "Step") -> None:
        """The optimiser step was taken (or refused); the weights are the updated ones."""

    def after_fit(self, fit: "Fit") -> None:
        """The loop is over; `fit.summary.status` says how it ended."""


@dataclass
class Step:
    """One optimiser step as the handlers see it; the loop fills each field before the event that needs it."""

    number: int
    recorded: bool  # whether the per-time-step quantities are due (the forward kept its trace)
    started: float  # time.perf_counter() when the step began
    seconds: float | None = None  # the step's wall time when the loop measures it itself (`watch`)
    inputs: Tensor | None = None
    targets: Tensor | None = None
    outputs: Tensor | None = None
    trace: Any = None  # cells.Trace of an unrolled forward, None for a fused one
    loss: Tensor | None = None
    penalty: Tensor | None = None
    grads: list[Tensor] = field(default_factory=list)  # every parameter's gradient (zeros where none flowed)
    grad_norms: Tensor | None = None  # per parameter, before clipping
    pre_clip: Tensor | None = None
    post_clip: Tensor | None = None
    clip_fired: Tensor | None = None
    values: dict[str, Any] = field(default_factory=dict)  # floats: loss, metric, penalty, pre, post, fired, grads
    weights_before: list[Tensor] = field(default_factory=list)  # clones taken after clipping, for update ratios
    finite: bool = True
    taken: bool = False
    ledger: list[tuple] = field(default_factory=list)  # the NaN/Inf event rows of this step
    rows: StepRows = field(default_factory=StepRows)


@dataclass
class Fit:
    """What every handler of one run shares: the model, its parameters by name, and the run's summary."""

    model: Any
    params: list
    names: list[str]  # parameter names by module path, in `params` order
    summary: Any  # summary.RunSummary, updated as the run goes; its `status` says whether it goes on


class Callbacks:
    """Handlers in order; `fire` calls one event on each."""

    def __init__(self, handlers: list[Callback]):
        self.handlers = handlers

    def fire(self, event: str, fit: Fit, step: Step | None = None) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; the loop fires: {', '.join(EVENTS)}")
        for handler in self.handlers:
            method = getattr(handler, event)
            if step is None:
                method(fit)
            else:
                method(fit, step)
