"""The training loop: SGD or Adam, explicit L2 penalty, clipping, a non-finite policy, a stop event,
and a `Recorder` pass per step that writes tidy rows to a sink (memory or the store)."""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Protocol

import torch
from torch import nn

from . import fastpath
from . import rundata as rd
from .checkpoints import checkpoint_steps
from .config import RunConfig
from .gradflow import time_gradient_fit
from .heldout import EVAL_BATCH, EVAL_SEED_OFFSET, heldout_every, is_heldout_step
from .model import RecurrentModel, build
from .recorder import (MemorySink, StepRows, first_nonfinite_hidden, first_nonfinite_hidden_grad, is_recorded,
                       layer_of, nonfinite_counts, parameter_rows, per_time_step_rows, retain_hidden_grads)
from .summary import RunSummary
# README's API is `from diagnostics.train import train, finish_diagnosis`; the verdict lives in its own module.
from .verdict import finish_diagnosis  # noqa: F401


STATUSES = ("completed", "diverged", "stopped", "interrupted")


class Sink(Protocol):
    def add(self, step: int, metrics=(), time_grads=(), gates=(), events=()) -> None: ...


class NonFiniteError(Exception):
    """The loss or a gradient went NaN/Inf; the loop catches it and applies `on_nonfinite`."""


def make_optimizer(config: RunConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)


def l2_penalty(model: nn.Module, weight_decay: float) -> torch.Tensor:
    """λ/2·Σ‖W‖² over weight matrices (not biases): an explicit term, so it is recorded apart from the loss."""
    weights = [p for name, p in model.named_parameters() if "weight" in name]
    if weight_decay == 0:
        return weights[0].new_zeros(())
    return 0.5 * weight_decay * sum(w.pow(2).sum() for w in weights)


def clip_gradients(config: RunConfig, params: list[nn.Parameter],
                   grad_norms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the configured clipping to gradients whose per-tensor norms are `grad_norms`; returns (pre-clip
    global norm, whether it changed anything)."""
    # The global norm is the norm of the per-tensor norms, as clip_grad_norm_ computes it; reusing the recorded
    # ones saves a second pass over every gradient.
    pre = torch.linalg.vector_norm(grad_norms)
    if config.clip == "norm":
        # Pascanu et al. 2013: rescale the whole gradient when its norm exceeds the threshold.
        torch.nn.utils.clip_grads_with_norm_(params, config.clip_threshold, pre)
        return pre, pre > config.clip_threshold
    if config.clip == "value":
        fired = torch.stack([p.grad.abs().max() for p in params]).max() > config.clip_threshold
        torch.nn.utils.clip_grad_value_(params, config.clip_threshold)
        return pre, fired
    return pre, torch.zeros((), dtype=torch.bool)


def evaluate(model: RecurrentModel, config: RunConfig) -> float:
    """Task metric on a fixed held-out batch (same for every run with this config's task and seed)."""
    generator = torch.Generator().manual_seed(config.seed + EVAL_SEED_OFFSET)
    inputs, targets = model.task.sample(EVAL_BATCH, generator)
    with torch.no_grad():
        outputs, _ = fastpath.forward(model, inputs, recorded=False)
        return float(model.task.metric(outputs, targets))


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
    sink = sink or memory
    model, task = build(config)
    params = list(model.parameters())
    names = [name for name, _ in model.named_parameters()]
    optimizer = make_optimizer(config, params)
    data_gen = torch.Generator().manual_seed(config.seed)
    summary = RunSummary(run_id=run_id, metric_name=task.metric_name)
    started = time.perf_counter()
    keep = set(checkpoint_steps(config)[:-1]) if on_weights is not None else set()
    every, heldout = heldout_every(config), None  # heldout: (step, value) of the latest held-out measurement
    if 0 in keep:
        on_weights(model, 0)

    for step in range(1, config.steps + 1):
        if stop is not None and stop.is_set():
            summary.status = "stopped"
            break
        t0 = time.perf_counter()
        rows = StepRows()
        inputs, targets = task.sample(config.batch_size, data_gen)
        recorded = is_recorded(step, config.record_every)
        # Unrecorded steps run PyTorch's fused kernel on the same parameters (trace None); recorded ones unroll.
        outputs, trace = fastpath.forward(model, inputs, recorded)
        if recorded:
            retain_hidden_grads(trace)
        loss, penalty, grads, grad_norms = _backward(model, optimizer, params, outputs, targets, config)
        if trace is None and not _all_finite(loss + penalty, grad_norms):
            # A fused step keeps no hidden states to locate the first non-finite one, and its one-hot input matmul
            # turns 0·NaN into NaN in W_ih columns of tokens that never occurred: replay the step unrolled, so a
            # non-finite step is recorded exactly as the written-out cells see it.
            outputs, trace = model(inputs, keep_gates=False)
            loss, penalty, grads, grad_norms = _backward(model, optimizer, params, outputs, targets, config)
        pre, fired = clip_gradients(config, params, grad_norms)
        post = torch.nn.utils.get_total_norm([p.grad for p in params]) if config.clip != "none" else pre
        before = [p.detach().clone() for p in params]
        first = torch.stack([loss.detach(), task.metric(outputs.detach(), targets), penalty.detach(), pre, post,
                             fired.float()]).tolist() + grad_norms.tolist()
        loss_v, metric_v, penalty_v, pre_v, post_v, fired_v = first[:6]
        grad_v = first[6:]
        rows.metrics += [(step, rd.LOSS, None, "", loss_v), (step, rd.METRIC, None, "", metric_v),
                         (step, rd.PENALTY, None, "", penalty_v), (step, rd.GRAD_NORM_PRE_CLIP, None, "", pre_v),
                         (step, rd.GRAD_NORM_POST_CLIP, None, "", post_v), (step, rd.CLIP_FIRED, None, "", fired_v)]

        taken = False
        try:
            if not all(math.isfinite(v) for v in (loss_v, penalty_v, pre_v, *grad_v)):
                raise NonFiniteError
            optimizer.step()
            taken = True
        except NonFiniteError:
            ledger = _locate_nonfinite(step, model, trace, inputs, targets, loss, names, grads, recorded)
            ledger += _overflowed_norms(step, ledger, names, grad_v, penalty_v)
            rows.events += ledger
            if summary.first_nonfinite is None:
                summary.first_nonfinite = _event_dict(ledger[0])
            if config.on_nonfinite == "stop":
                summary.status = "diverged"
            else:
                summary.skipped_steps += 1
                rows.events.append((step, rd.EVENT_SKIPPED_STEP, "", None, None, 0, 0, 0))
        if recorded:
            per_time_step_rows(step, trace, model, config.cell, config.activation, rows)
            profile = [v for s, k, t, v in rows.time_grads if k == 0]
            if all(math.isfinite(v) for v in profile) and summary.status != "diverged":
                summary.time_grad_step, summary.time_grad_profile = step, profile
        _weight_rows(step, params, names, before, grad_v, rows)
        rows.metrics.append((step, rd.STEP_SECONDS, None, "", time.perf_counter() - t0))
        if summary.status != "diverged" and is_heldout_step(step, config, every):  # not timed as the step
            heldout = (step, evaluate(model, config))
            rows.metrics.append((step, rd.HELDOUT_METRIC, None, "", heldout[1]))
        sink.add(step, rows.metrics, rows.time_grads, rows.gates, rows.events)

        summary.steps_done = step
        if math.isfinite(loss_v):
            summary.final_loss = loss_v
        if math.isfinite(pre_v):
            summary.max_grad_norm = max(pre_v, summary.max_grad_norm or 0.0)
        summary.steps_taken += taken
        summary.clip_count += int(taken and fired_v > 0)
        summary.train_seconds = time.perf_counter() - started
        if step in keep and summary.status != "diverged":
            on_weights(model, step)
        if on_step is not None:
            on_step(summary)
        if summary.status == "diverged":
            break
    if summary.status == "running":
        summary.status = "completed"
    measured = heldout is not None and heldout[0] == summary.steps_done
    summary.final_metric = heldout[1] if measured else evaluate(model, config)
    summary.train_seconds = time.perf_counter() - started
    if summary.time_grad_profile:
        fit = time_gradient_fit(summary.time_grad_profile)
        summary.time_grad_ratio, summary.time_grad_gain, summary.memory_horizon = fit.ratio, fit.gain, fit.horizon
    if on_end is not None:
        on_end(model, summary)
    data = memory.data() if memory is not None else None
    return summary, data


def _all_finite(objective: torch.Tensor, grad_norms: torch.Tensor) -> bool:
    return bool(torch.isfinite(objective.detach()).all() and torch.isfinite(grad_norms).all())


def _backward(model, optimizer, params, outputs, targets, config: RunConfig):
    """Loss, penalty, every parameter's gradient (zeros where none flowed) and their norms, for one forward pass."""
    loss = model.task.loss(outputs, targets)
    penalty = l2_penalty(model, config.weight_decay)
    optimizer.zero_grad(set_to_none=True)
    (loss + penalty).backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    return loss, penalty, grads, torch.stack(torch._foreach_norm(grads))  # one call for all tensors


def _weight_rows(step, params, names, before, grad_v, rows: StepRows) -> None:
    """Weight norm, max |w| and update ratio ‖Δw‖/‖w‖ per tensor and layer, in one batch; the foreach ops take
    all tensors per call, as the optimisers do, instead of four calls per tensor."""
    with torch.no_grad():
        after = [p.detach() for p in params]
        stats = torch.stack([torch.stack(torch._foreach_norm(after)),
                             torch.stack(torch._foreach_max(torch._foreach_abs(after))),
                             torch.stack(torch._foreach_norm(torch._foreach_sub(after, before))),
                             torch.stack(torch._foreach_norm(before))]).tolist()
    weight, max_abs, delta, before_n = stats
    parameter_rows(step, names, grad_v, weight, max_abs, delta, before_n, rows)
    bad = [i for i, (w, m) in enumerate(zip(weight, max_abs)) if not (math.isfinite(w) and math.isfinite(m))]
    for i, counts in zip(bad, nonfinite_counts([params[i].detach() for i in bad])):
        if any(counts):
            rows.events.append((step, rd.EVENT_NONFINITE, names[i], layer_of(names[i]), None, *counts))


def _locate_nonfinite(step, model, trace, inputs, targets, loss, names, grads, recorded) -> list[tuple]:
    """Ledger rows for a step whose loss or gradients went non-finite, most telling first: the earliest
    non-finite hidden state (forward order), else the loss, else the first non-finite ∂L/∂h_t in backward
    order (re-running the step with hidden gradients retained if this step did not keep them)."""
    events = []
    hidden = first_nonfinite_hidden(trace)
    if hidden is not None:
        k, t, counts = hidden
        events.append((step, rd.EVENT_NONFINITE, "hidden", k, t, *counts))
    loss_counts = nonfinite_counts([loss.detach()])[0]
    if any(loss_counts):
        events.append((step, rd.EVENT_NONFINITE, "loss", None, None, *loss_counts))
    if hidden is None and not any(loss_counts):
        if recorded:
            hidden_grads = [[h.grad for h in layer] for layer in trace.hiddens]
        else:  # replay the step keeping ∂L/∂h_t; autograd.grad leaves the parameters' .grad alone
            outputs, replay = model(inputs, keep_gates=False)
            flat = [h for layer in replay.hiddens for h in layer]
            found = iter(torch.autograd.grad(model.task.loss(outputs, targets), flat, allow_unused=True))
            hidden_grads = [[next(found) for _ in layer] for layer in replay.hiddens]
        located = first_nonfinite_hidden_grad(hidden_grads)
        if located is not None:
            k, t, counts = located
            events.append((step, rd.EVENT_NONFINITE, "grad:hidden", k, t, *counts))
    for name, counts in zip(names, nonfinite_counts(grads)):
        if any(counts):
            events.append((step, rd.EVENT_NONFINITE, f"grad:{name}", layer_of(name), None, *counts))
    return events


def _overflowed_norms(step, ledger, names, grad_v, penalty_v) -> list[tuple]:
    """Ledger rows for a step whose tensors all hold finite numbers but whose norms do not: entries above ~1e19
    square past float32's 3.4e38, so a gradient norm or the L2 penalty is +Inf (clipping would see the same)."""
    if ledger:
        return []
    rows = [(step, rd.EVENT_NONFINITE, f"grad_norm:{name}", layer_of(name), None, 0, 1, 0)
            for name, v in zip(names, grad_v) if not math.isfinite(v)]
    if not math.isfinite(penalty_v):
        rows.append((step, rd.EVENT_NONFINITE, "penalty", None, None, 0, 1, 0))
    return rows or [(step, rd.EVENT_NONFINITE, "grad_norm", None, None, 0, 1, 0)]


def _event_dict(row: tuple) -> dict:
    step, _, tensor, layer, time_step, *_ = row
    return {"step": step, "tensor": tensor, "layer": layer, "time_step": time_step}
