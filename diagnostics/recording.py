"""The recorder as loop handlers: a step's scalars after clipping, its scheduled quantities after the update,
and the write of its rows to a sink (memory or the store). The lab's loop and `watch` both use these."""

from __future__ import annotations

import math
import time
from typing import Protocol

from . import rundata as rd
from .events import Callback, Fit, Step
from .gradflow import time_gradient_fit
from .quantities import Quantity, collect


class Sink(Protocol):
    def add(self, step: int, metrics=(), time_grads=(), gates=(), events=()) -> None: ...


class Recorder(Callback):
    """Rows of the step's scalars (loss, training-batch metric, penalty, global norm before and after clipping,
    whether clipping fired), then of every quantity due, then the step's wall time."""

    def __init__(self, quantities: list[Quantity]):
        self.quantities = quantities

    def after_clip(self, fit: Fit, step: Step) -> None:
        v, n = step.values, step.number
        step.rows.metrics += [(n, name, None, "", v[key]) for key, name in SCALARS if key in v]
        step.weights_before = [p.detach().clone() for p in fit.params]

    def after_step(self, fit: Fit, step: Step) -> None:
        collect(self.quantities, fit, step)
        seconds = step.seconds if step.seconds is not None else time.perf_counter() - step.started
        step.rows.metrics.append((step.number, rd.STEP_SECONDS, None, "", seconds))


# `Step.values` keys and the metric each is recorded as; a loop records those it knows (`watch` sees no penalty,
# no training-batch metric and no clipping of its own).
SCALARS = (("loss", rd.LOSS), ("metric", rd.METRIC), ("penalty", rd.PENALTY), ("pre", rd.GRAD_NORM_PRE_CLIP),
           ("post", rd.GRAD_NORM_POST_CLIP), ("fired", rd.CLIP_FIRED))


class Write(Callback):
    """Hand the step's rows to the sink, once every handler before it has added its own."""

    def __init__(self, sink: Sink):
        self.sink = sink

    def after_step(self, fit: Fit, step: Step) -> None:
        r = step.rows
        self.sink.add(step.number, r.metrics, r.time_grads, r.gates, r.events)


class Summarise(Callback):
    """Keep the run's bounded summary up to date: steps, last finite loss, largest gradient norm, clipping, the
    latest all-finite gradient-through-time profile (layer 0) and, at the end, its fit."""

    def __init__(self, started: float):
        self.started = started

    def after_step(self, fit: Fit, step: Step) -> None:
        s, v = fit.summary, step.values
        if step.rows.time_grads:
            profile = [value for _, k, _, value in step.rows.time_grads if k == 0]
            if all(math.isfinite(x) for x in profile) and s.status != "diverged":
                s.time_grad_step, s.time_grad_profile = step.number, profile
        s.steps_done = step.number
        if math.isfinite(v["loss"]):
            s.final_loss = v["loss"]
        if math.isfinite(v["pre"]):
            s.max_grad_norm = max(v["pre"], s.max_grad_norm or 0.0)
        s.steps_taken += step.taken
        s.clip_count += int(step.taken and v.get("fired", 0) > 0)
        s.train_seconds = time.perf_counter() - self.started

    def after_fit(self, fit: Fit) -> None:
        s = fit.summary
        if s.status == "running":
            s.status = "completed"
        s.train_seconds = time.perf_counter() - self.started
        if s.time_grad_profile:
            fit_ = time_gradient_fit(s.time_grad_profile)
            s.time_grad_ratio, s.time_grad_gain, s.memory_horizon = fit_.ratio, fit_.gain, fit_.horizon
