"""`watch(model)`: the lab's recording of gradient flow, inside a practitioner's own training loop.

    with watch(model, every=10, db="runs/runs.sqlite", name="my-model") as w:
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            w.step(loss)            # after backward, before optimizer.step
            optimizer.step()

Every step records the loss, the global and per-parameter gradient norms, weight norms, max |w|, update ratios and
the NaN/Inf ledger of every parameter, named by module path. On every `every`-th step (and the first) each
`nn.RNN`/`nn.LSTM`/`nn.GRU` runs its forward through its written-out twin (`twin`) on its own parameters, so the
user's own `loss.backward()` leaves ∂L/∂h_t in every state: the gradient through time per layer and direction,
the gates and σ_max(W_hh) are recorded with no second backward pass. The recording is the lab's own: the same
events, quantities, ledger and sinks (`events`, `recording`, `nonfinite`)."""

from __future__ import annotations

import math
import time
import types

import torch
from torch import nn

from .description import Lane as DescribedLane
from .description import ModelDescription, RecurrentModule
from .events import Callback, Callbacks, Fit, Step
from .lane_quantities import LaneGateStats, LaneSaturation, LaneTimeGradNorms, WatchedTrace
from .nonfinite import Ledger
from .quantities import ParameterNorms, Spectrum
from .recorder import MemorySink
from .recording import Recorder, Summarise, Write
from .schedules import Schedule
from .summary import RunSummary
from .twin import activation_of, cell_of, refusal, twin_forward
from .watched_verdict import WatchedEvidence


WATCHED = "_gradient_flow_lab_watch"  # marks the instance forward a watch installed


class WatchError(ValueError):
    """A model or a call that `watch` cannot record, with what was wrong and what is allowed."""


def describe_model(model: nn.Module, name: str | None = None) -> ModelDescription:
    """A user's model as the verdicts read it: every recurrent module by its path, in `named_modules` order."""
    modules = tuple(RecurrentModule(path=path, cell=cell_of(m), num_layers=m.num_layers, hidden_size=m.hidden_size,
                                    activation=activation_of(m), directions=2 if m.bidirectional else 1)
                    for path, m in model.named_modules() if cell_of(m) is not None)
    if not modules:
        raise WatchError(f"{type(model).__name__} holds no nn.RNN, nn.LSTM or nn.GRU; watch records the gradient "
                         "flow of those")
    return ModelDescription(modules=modules, name=name, source="watch")


class Watch:
    """The context `watch` returns: `step(loss)` once per optimiser step, after backward and before
    `optimizer.step()`. `summary` is the run's bounded summary, `data()` its recording (from memory, or read back
    from the store), `run_id` its id in the store."""

    def __init__(self, model: nn.Module, every: int = 10, db=None, name: str | None = None):
        if not isinstance(model, nn.Module):
            raise WatchError(f"watch takes an nn.Module, got {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise WatchError(f"every must be a whole number of steps ≥ 1 (1: every step), got {every!r}")
        if name is not None and not isinstance(name, str):
            raise WatchError(f"name must be a string, got {type(name).__name__}")
        self.recurrent = [(path, m) for path, m in model.named_modules() if cell_of(m) is not None]
        refused = [reason for path, m in self.recurrent if (reason := refusal(path, m))]
        refused += [f"{path or 'the model'} is watched already by another watch(); one watch per model at a time"
                    for path, m in self.recurrent if getattr(m.__dict__.get("forward"), WATCHED, False)]
        if refused:
            raise WatchError("; ".join(refused))
        self.model, self.every, self.db, self.name = model, every, db, name
        self.description = describe_model(model, name)
        self.schedule = Schedule.every(every)
        self.number = 0  # optimiser steps whose `step(loss)` has been called
        self.run_id: int | None = None
        self._active = False
        self._store = self._writer = self._memory = None
        self._pending: Step | None = None
        self._lanes: dict[str, list] = {}
        self._last_finite: bool | None = None  # whether the latest step's loss and gradient norms were finite

    # --- the context ---------------------------------------------------------------------------------------

    def __enter__(self) -> "Watch":
        params = [p for _, p in self.model.named_parameters()]
        names = [n for n, _ in self.model.named_parameters()]
        self.fit = Fit(model=self.model, params=params, names=names, summary=RunSummary(metric_name=""))
        lane_of = self.description.lane_of
        described = self.description.lanes()
        modules = dict(self.recurrent)
        matrices = [(lane.weight_hh, getattr(modules[lane.module.path], lane.weight_hh.rsplit(".", 1)[-1]))
                    for lane in described]
        radius = [lane.module.cell == "rnn" for lane in described]
        quantities = [LaneTimeGradNorms(self.schedule), LaneGateStats(self.schedule, self.description),
                      LaneSaturation(self.schedule, self.description), Spectrum(self.schedule, matrices, radius),
                      ParameterNorms(Schedule.every(1), lane_of, ledger=False)]
        self._open_sink()
        self.events = Callbacks([Recorder(quantities), Ledger(layer=lane_of, weights=True), Locate(self.description),
                                 Write(self._writer or self._memory), Summarise(time.perf_counter()),
                                 WatchedEvidence(self.description)])
        self._install()
        self._active = True
        self._last = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._active:
                self._active = False
                if self._pending is not None:
                    self._finish(self._pending)
                s = self.fit.summary
                if exc_type is not None:
                    s.status = "stopped"
                elif self._last_finite is False:  # it went NaN/Inf and had not recovered by its last step
                    s.status = "diverged"
                self.events.fire("after_fit", self.fit)
                if self._writer is not None:
                    self._writer.close(s.status, s.to_dict())
        finally:
            self._uninstall()
            self._lanes = {}  # a forward after the last step(loss) must not keep its graph alive
            if self._store is not None:
                self._store.close()
        return False

    def step(self, loss) -> None:
        """Record one optimiser step; call it after `loss.backward()` and before `optimizer.step()`."""
        if not self._active:
            raise WatchError("w.step(loss) is called inside the `with watch(...) as w:` block, after "
                             "loss.backward() and before optimizer.step()")
        now = time.perf_counter()
        if self._pending is not None:
            self._finish(self._pending)  # the optimiser has stepped since: its update ratios can be measured
        self.number += 1
        lanes, self._lanes = self._lanes, {}
        recorded = bool(lanes)
        step = Step(self.number, recorded=recorded, started=self._last, seconds=now - self._last)
        self._last = now
        step.loss = (loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))).float().mean()
        if recorded:
            step.trace = WatchedTrace([self._lane(lanes, lane) for lane in self.description.lanes()])
        fit = self.fit
        step.grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in fit.params]
        step.grad_norms = torch.stack(torch._foreach_norm(step.grads))
        self.events.fire("after_backward", fit, step)
        # In float64: parameters' norms near 1e19 overflow a float32 sum of squares, which would report an
        # infinite global norm (and locate the first NaN/Inf there) while every gradient is still finite.
        total = torch.linalg.vector_norm(step.grad_norms.double())
        first = torch.stack([step.loss.double(), total]).tolist() + step.grad_norms.tolist()
        step.values = {"loss": first[0], "pre": first[1], "grads": first[2:]}
        self.events.fire("after_clip", fit, step)
        step.finite = self._last_finite = all(math.isfinite(x) for x in first)
        step.taken = True  # the user's optimiser steps; a non-finite step is recorded, not refused
        if not step.finite:
            self.events.fire("on_nonfinite", fit, step)
        self._pending = step

    def data(self):
        """The recording so far: every step whose `step(loss)` was followed by the next one (all, after exit)."""
        if self._memory is not None:
            return self._memory.data()
        from .store import Store
        with Store(self.db, create=False) as store:
            return store.load(self.run_id)

    @property
    def summary(self) -> RunSummary:
        return self.fit.summary

    # --- inside ----------------------------------------------------------------------------------------------

    def _finish(self, step: Step) -> None:
        self._pending = None
        self.events.fire("after_step", self.fit, step)

    def _open_sink(self) -> None:
        if self.db is None:
            self._memory = MemorySink()
            return
        from .store import Store
        self._store = Store(self.db)
        self.run_id = self._store.create_run({}, self.description.to_dict())
        self._writer = self._store.writer(self.run_id)
        self.fit.summary.run_id = self.run_id

    def _lane(self, traced: dict[str, list], lane: DescribedLane):
        found = traced.get(lane.module.path)
        return found[lane.layer * lane.module.directions + lane.direction] if found else None

    def _tracing(self) -> bool:
        return self._active and torch.is_grad_enabled() and self.schedule.due(self.number + 1)

    def _install(self) -> None:
        """Give each recurrent module an instance `forward` that runs its twin on recorded steps and its own
        fused forward otherwise; a forward already set on the instance is kept to be put back."""
        self._saved = {}
        for path, module in self.recurrent:
            self._saved[path] = module.__dict__.get("forward")
            module.forward = types.MethodType(self._forward(path, module.__dict__.get("forward")), module)

    def _uninstall(self) -> None:
        for path, module in self.recurrent:
            if path not in getattr(self, "_saved", {}):
                continue
            saved = self._saved.pop(path)
            if saved is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = saved

    def _forward(self, path: str, own):
        watch = self

        def forward(module, input, hx=None):
            if not watch._tracing():
                return own(input, hx) if own is not None else type(module).forward(module, input, hx)
            result, lanes = twin_forward(module, input, hx)
            for lane in lanes:
                for h in lane.hiddens:
                    if h.requires_grad:  # not in a frozen module fed by inputs that need no gradient
                        h.retain_grad()
            watch._lanes[path] = lanes  # a module called twice in one step: its last call is recorded
            return result
        setattr(forward, WATCHED, True)
        return forward


class Locate(Callback):
    """Name the first non-finite value as a practitioner reads it: module path, parameter, layer within the
    module and direction, beside the ledger's step, tensor and time step."""

    def __init__(self, description: ModelDescription):
        self.description = description

    def on_nonfinite(self, fit: Fit, step: Step) -> None:
        first = fit.summary.first_nonfinite
        if first is None or first["step"] != step.number or "module" in first:
            return
        lane = first["layer"]
        first.update(self.description.locate(first["tensor"], lane), lane=lane)
        if first["time_step"] is None:  # a weight: on a recorded step, where its lane's states first went bad
            hidden = [row for row in step.ledger if row[2] in ("hidden", "grad:hidden") and row[3] == lane]
            first["time_step"] = hidden[0][4] if hidden else None


def watch(model: nn.Module, every: int = 10, db=None, name: str | None = None) -> Watch:
    """Record `model`'s gradient flow from the user's own loop: see this module's docstring. `db` is a store
    path (None: in memory only, read with `w.data()`); `name` labels the run in the store."""
    return Watch(model, every=every, db=db, name=name)
