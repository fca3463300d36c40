"""The lab's training loop: SGD or Adam, an explicit L2 penalty, clipping, and the fixed events of `events`.

The loop itself only samples, runs forward and backward, clips and steps; recording, the NaN/Inf ledger and
policy, the summary, the held-out metric, checkpoints, stopping and progress are handlers of its events."""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

import torch
from torch import nn

from . import fastpath
from . import rundata as rd
from .checkpoints import checkpoint_steps
from .clipping import clip_gradients
from .config import RunConfig
from .events import Callback, Callbacks, Fit, Step
from .heldout import EVAL_BATCH, EVAL_SEED_OFFSET, heldout_every, is_heldout_step
from .model import RecurrentModel, build
from .nonfinite import NONFINITE_POLICIES, Ledger, all_finite
from .optimizers import make_optimizer
from .quantities import GateStats, ParameterNorms, Saturation, Spectrum, TimeGradNorms, needs_trace
from .recorder import MemorySink, retain_hidden_grads
from .recording import Recorder, Sink, Summarise, Write
from .schedules import Schedule
from .summary import RunSummary
# README's API is `from diagnostics.train import train, finish_diagnosis`; the verdict lives in its own module.
from .verdict import finish_diagnosis  # noqa: F401


STATUSES = ("completed", "diverged", "stopped", "interrupted")


def l2_penalty(model: nn.Module, weight_decay: float) -> torch.Tensor:
    """λ/2·Σ‖W‖² over weight matrices (not biases): an explicit term, so it is recorded apart from the loss."""
    weights = [p for name, p in model.named_parameters() if "weight" in name]
    if weight_decay == 0:
        return weights[0].new_zeros(())
    return 0.5 * weight_decay * sum(w.pow(2).sum() for w in weights)


def evaluate(model: RecurrentModel, config: RunConfig) -> float:
    """Task metric on a fixed held-out batch (same for every run with this config's task and seed)."""
    generator = torch.Generator().manual_seed(config.seed + EVAL_SEED_OFFSET)
    inputs, targets = model.task.sample(EVAL_BATCH, generator)
    with torch.no_grad():
        outputs, _ = fastpath.forward(model, inputs, recorded=False)
        return float(model.task.metric(outputs, targets))


def lab_quantities(config: RunConfig, model: RecurrentModel) -> list:
    """What a lab run records: parameter norms every step, the per-time-step quantities every `record_every`."""
    per_time = Schedule.every(config.record_every)
    matrices = [(f"rnn.weight_hh_l{k}", getattr(model.rnn, f"weight_hh_l{k}")) for k in range(config.num_layers)]
    return [TimeGradNorms(per_time), GateStats(per_time, config.cell),
            Saturation(per_time, config.activation if config.cell == "rnn" else "tanh"),
            Spectrum(per_time, matrices, radius=config.cell == "rnn"), ParameterNorms(Schedule.every(1))]


def train(config: RunConfig, sink: Sink | None = None, stop: threading.Event | None = None,
          on_step: Callable[[RunSummary], None] | None = None, run_id: int | None = None,
          on_end: Callable[[RecurrentModel, RunSummary], None] | None = None,
          on_weights: Callable[[RecurrentModel, int], None] | None = None) -> tuple[RunSummary, rd.RunData | None]:
    """Train one run, recording into `sink` (a fresh `MemorySink` when None, whose data is returned);
    `on_end` receives the trained model (e.g. to keep a checkpoint), `on_weights(model, step)` the model at the
    config's earlier `checkpoint_steps` (0: before the first step).

    Deterministic: the same config (seed included) gives identical numbers on CPU."""
    # Denormal floats make CPU arithmetic up to 10x slower once gradients vanish; flushing them to zero
    # moves float32 underflow from ~1e-45 to ~1e-38, and underflow is recorded as exactly 0 either way.
    torch.set_flush_denormal(True)
    memory = MemorySink() if sink is None else None
    model, task = build(config)
    params = list(model.parameters())
    optimizer = make_optimizer(config.optimizer, params, lr=config.lr, momentum=config.momentum)
    data_gen = torch.Generator().manual_seed(config.seed)
    fit = Fit(model=model, params=params, names=[name for name, _ in model.named_parameters()],
              summary=RunSummary(run_id=run_id, metric_name=task.metric_name))
    quantities = lab_quantities(config, model)
    events = Callbacks([StopWhenSet(stop), Recorder(quantities), Ledger(replay=_replay(model)),
                        NONFINITE_POLICIES[config.on_nonfinite](), HeldOut(config), Write(sink or memory),
                        Summarise(time.perf_counter()), Checkpoints(config, on_weights, on_end), Progress(on_step)])

    for number in range(1, config.steps + 1):
        step = Step(number, recorded=needs_trace(quantities, number), started=time.perf_counter())
        events.fire("before_step", fit, step)
        if fit.summary.status != "running":
            break
        step.inputs, step.targets = task.sample(config.batch_size, data_gen)
        # Unrecorded steps run PyTorch's fused kernel on the same parameters (trace None); recorded ones unroll.
        step.outputs, step.trace = fastpath.forward(model, step.inputs, step.recorded)
        if step.recorded:
            retain_hidden_grads(step.trace)
        _backward(model, optimizer, params, config, step)
        if step.trace is None and not all_finite(step.loss + step.penalty, step.grad_norms):
            # A fused step keeps no hidden states to locate the first non-finite one, and its one-hot input matmul
            # turns 0·NaN into NaN in W_ih columns of tokens that never occurred: replay the step unrolled, so a
            # non-finite step is recorded exactly as the written-out cells see it.
            step.outputs, step.trace = model(step.inputs, keep_gates=False)
            _backward(model, optimizer, params, config, step)
        events.fire("after_backward", fit, step)
        step.pre_clip, step.clip_fired = clip_gradients(config.clip, config.clip_threshold, params, step.grad_norms)
        step.post_clip = (torch.nn.utils.get_total_norm([p.grad for p in params]) if config.clip != "none"
                          else step.pre_clip)
        step.values = _scalars(step, task)
        events.fire("after_clip", fit, step)
        v = step.values
        step.finite = all(math.isfinite(x) for x in (v["loss"], v["penalty"], v["pre"], *v["grads"]))
        if step.finite:
            optimizer.step()
            step.taken = True
        else:
            events.fire("on_nonfinite", fit, step)
        events.fire("after_step", fit, step)
        if fit.summary.status == "diverged":
            break
    events.fire("after_fit", fit)
    return fit.summary, memory.data() if memory is not None else None


def _backward(model, optimizer, params, config: RunConfig, step: Step) -> None:
    """Loss, penalty, every parameter's gradient (zeros where none flowed) and their norms, for one forward pass."""
    step.loss = model.task.loss(step.outputs, step.targets)
    step.penalty = l2_penalty(model, config.weight_decay)
    optimizer.zero_grad(set_to_none=True)
    (step.loss + step.penalty).backward()
    step.grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    step.grad_norms = torch.stack(torch._foreach_norm(step.grads))  # one call for all tensors


def _scalars(step: Step, task) -> dict:
    """The step's scalars and per-parameter gradient norms as floats, in one transfer out of the graph."""
    first = torch.stack([step.loss.detach(), task.metric(step.outputs.detach(), step.targets), step.penalty.detach(),
                         step.pre_clip, step.post_clip, step.clip_fired.float()]).tolist() + step.grad_norms.tolist()
    return dict(zip(("loss", "metric", "penalty", "pre", "post", "fired"), first[:6]), grads=first[6:])


def _replay(model: RecurrentModel):
    """∂L/∂h_t of a step that kept none, from its forward replayed unrolled; `autograd.grad` leaves the
    parameters' .grad alone."""
    def replay(step: Step):
        outputs, trace = model(step.inputs, keep_gates=False)
        flat = [h for layer in trace.hiddens for h in layer]
        found = iter(torch.autograd.grad(model.task.loss(outputs, step.targets), flat, allow_unused=True))
        return [[next(found) for _ in layer] for layer in trace.hiddens]
    return replay


class StopWhenSet(Callback):
    """End the run as "stopped" before the next step once `stop` is set (the dashboard's Stop)."""

    def __init__(self, stop: threading.Event | None):
        self.stop = stop

    def before_step(self, fit: Fit, step: Step) -> None:
        if self.stop is not None and self.stop.is_set():
            fit.summary.status = "stopped"


class HeldOut(Callback):
    """The task metric on the fixed held-out batch on its schedule (`heldout`), not timed as the step; the
    summary's final metric is the last step's, measured once."""

    def __init__(self, config: RunConfig):
        self.config, self.every, self.latest = config, heldout_every(config), None

    def after_step(self, fit: Fit, step: Step) -> None:
        if fit.summary.status != "diverged" and is_heldout_step(step.number, self.config, self.every):
            self.latest = (step.number, evaluate(fit.model, self.config))
            step.rows.metrics.append((step.number, rd.HELDOUT_METRIC, None, "", self.latest[1]))

    def after_fit(self, fit: Fit) -> None:
        measured = self.latest is not None and self.latest[0] == fit.summary.steps_done
        fit.summary.final_metric = self.latest[1] if measured else evaluate(fit.model, self.config)


class Checkpoints(Callback):
    """`on_weights(model, step)` at the config's earlier checkpoint steps (0: before the first step) while the
    run is finite, and `on_end(model, summary)` with the trained model."""

    def __init__(self, config: RunConfig, on_weights, on_end):
        self.keep = set(checkpoint_steps(config)[:-1]) if on_weights is not None else set()
        self.on_weights, self.on_end = on_weights, on_end

    def before_step(self, fit: Fit, step: Step) -> None:
        if step.number == 1 and 0 in self.keep:
            self.on_weights(fit.model, 0)

    def after_step(self, fit: Fit, step: Step) -> None:
        if step.number in self.keep and fit.summary.status != "diverged":
            self.on_weights(fit.model, step.number)

    def after_fit(self, fit: Fit) -> None:
        if self.on_end is not None:
            self.on_end(fit.model, fit.summary)


class Progress(Callback):
    """`on_step(summary)` after every step: the dashboard's progress, pause and owner checks hang off it."""

    def __init__(self, on_step: Callable[[RunSummary], None] | None):
        self.on_step = on_step

    def after_step(self, fit: Fit, step: Step) -> None:
        if self.on_step is not None:
            self.on_step(fit.summary)
