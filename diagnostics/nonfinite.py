"""NaN/Inf in a step: the ledger that locates it, and the policies that decide whether the run goes on.

`NONFINITE_POLICIES` is the registry `RunConfig.on_nonfinite` takes its allowed values from."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from . import rundata as rd
from .events import Callback, Fit, Step
from .recorder import first_nonfinite_hidden, first_nonfinite_hidden_grad, layer_of, nonfinite_counts

# Replays a step's forward unrolled and returns ∂L/∂h_t per layer and time step (None where none flowed),
# leaving the parameters' .grad alone; for steps whose forward kept no hidden gradients.
Replay = Callable[[Step], list[list[Tensor | None]]]


class Ledger(Callback):
    """Writes the step's NaN/Inf events, most telling first: (with `weights`) every non-finite weight; the
    earliest non-finite hidden state (forward order), else the loss, else the first non-finite ∂L/∂h_t in
    backward order (from the step's own trace when it kept the hidden gradients, else from `replay`); then every
    non-finite gradient. A step whose tensors are finite but whose norms overflow gets the norms that did."""

    def __init__(self, replay: Replay | None = None, layer: Callable[[str], int | None] = layer_of,
                 weights: bool = False):
        self.replay, self.layer, self.weights = replay, layer, weights

    def on_nonfinite(self, fit: Fit, step: Step) -> None:
        ledger = self._weights(fit, step) + self._located(fit, step) or self._overflowed(fit, step)
        step.ledger = ledger
        step.rows.events += ledger
        if fit.summary.first_nonfinite is None:
            _, _, tensor, layer, time_step, *_ = ledger[0]
            fit.summary.first_nonfinite = {"step": step.number, "tensor": tensor, "layer": layer,
                                           "time_step": time_step}

    def _weights(self, fit: Fit, step: Step) -> list[tuple]:
        """With `weights`, non-finite weights first: a user's own optimiser may have written them, and every
        value computed from them follows (the lab refuses such steps, so its weights stay finite)."""
        if not self.weights:
            return []
        return [(step.number, rd.EVENT_NONFINITE, name, self.layer(name), None, *counts)
                for name, counts in zip(fit.names, nonfinite_counts([p.detach() for p in fit.params])) if any(counts)]

    def _located(self, fit: Fit, step: Step) -> list[tuple]:
        n, events = step.number, []
        hidden = first_nonfinite_hidden(step.trace) if step.trace is not None else None
        if hidden is not None:
            k, t, counts = hidden
            events.append((n, rd.EVENT_NONFINITE, "hidden", k, t, *counts))
        loss_counts = nonfinite_counts([step.loss.detach()])[0]
        if any(loss_counts):
            events.append((n, rd.EVENT_NONFINITE, "loss", None, None, *loss_counts))
        if hidden is None and not any(loss_counts):
            if step.recorded and step.trace is not None:
                hidden_grads = [[h.grad for h in layer] for layer in step.trace.hiddens]
            else:
                hidden_grads = self.replay(step) if self.replay is not None else []
            located = first_nonfinite_hidden_grad(hidden_grads)
            if located is not None:
                k, t, counts = located
                events.append((n, rd.EVENT_NONFINITE, "grad:hidden", k, t, *counts))
        for name, counts in zip(fit.names, nonfinite_counts(step.grads)):
            if any(counts):
                events.append((n, rd.EVENT_NONFINITE, f"grad:{name}", self.layer(name), None, *counts))
        return events

    def _overflowed(self, fit: Fit, step: Step) -> list[tuple]:
        """Entries above ~1e19 square past float32's 3.4e38, so a gradient norm or the L2 penalty is +Inf
        although every tensor holds finite numbers (clipping would see the same)."""
        n = step.number
        rows = [(n, rd.EVENT_NONFINITE, f"grad_norm:{name}", self.layer(name), None, 0, 1, 0)
                for name, v in zip(fit.names, step.values["grads"]) if not math.isfinite(v)]
        if not math.isfinite(step.values.get("penalty", 0.0)):  # `watch` sees no penalty of its own
            rows.append((n, rd.EVENT_NONFINITE, "penalty", None, None, 0, 1, 0))
        return rows or [(n, rd.EVENT_NONFINITE, "grad_norm", None, None, 0, 1, 0)]


class StopOnNonfinite(Callback):
    """End the run as "diverged" at its first non-finite step: what follows a NaN is NaN."""

    def on_nonfinite(self, fit: Fit, step: Step) -> None:
        fit.summary.status = "diverged"


class SkipNonfinite(Callback):
    """Refuse that one optimiser step and go on, as mixed-precision loss scalers do."""

    def on_nonfinite(self, fit: Fit, step: Step) -> None:
        fit.summary.skipped_steps += 1
        step.rows.events.append((step.number, rd.EVENT_SKIPPED_STEP, "", None, None, 0, 0, 0))


NONFINITE_POLICIES: dict[str, type[Callback]] = {"stop": StopOnNonfinite, "skip": SkipNonfinite}


def all_finite(objective: Tensor, grad_norms: Tensor) -> bool:
    return bool(torch.isfinite(objective.detach()).all() and torch.isfinite(grad_norms).all())
