"""The quantities a step records, each with its own schedule, its own named tensors and the rows they make.

A quantity measures tensors (inside `torch.no_grad`: statistics are data, not graph) and names them; `collect`
moves the numbers of every quantity due at a step out of the graph in one `torch.cat(...).tolist()` and hands
each quantity back its own numbers by name, so no quantity knows where another's numbers sit."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from . import rundata as rd
from .cells import GATE_NAMES
from .recorder import (GATE_HIGH, GATE_LOW, _share, layer_of, nonfinite_counts, parameter_rows, saturation,
                       time_grad_norms)
from .schedules import Schedule


class Quantity:
    """One recorded quantity. `needs_trace`: measured from an unrolled forward's hidden states and gates, so the
    loop unrolls the steps it is due on."""

    needs_trace = False

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def measure(self, fit, step) -> dict[str, Tensor]:
        raise NotImplementedError

    def rows(self, fit, step, numbers: dict[str, Any]) -> None:
        """Append this quantity's rows to `step.rows` from its numbers (nested lists shaped like its tensors)."""
        raise NotImplementedError


def collect(quantities: list[Quantity], fit, step) -> None:
    """Measure every quantity due at this step and write its rows, with one transfer of numbers for all."""
    due = [q for q in quantities if q.schedule.due(step.number) and (step.trace is not None or not q.needs_trace)]
    with torch.no_grad():
        measured = [q.measure(fit, step) for q in due]
    tensors = [t.reshape(-1) for named in measured for t in named.values()]
    if not tensors:
        return
    flat = torch.cat(tensors).tolist()
    pos = 0
    for quantity, named in zip(due, measured):
        numbers = {}
        for name, t in named.items():
            numbers[name] = _shaped(flat[pos:pos + t.numel()], tuple(t.shape))
            pos += t.numel()
        quantity.rows(fit, step, numbers)


def _shaped(flat: list, shape: tuple[int, ...]):
    """`flat` as nested lists of `shape`, as `Tensor.tolist()` would give them."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    size = len(flat) // shape[0]
    return [_shaped(flat[i * size:(i + 1) * size], shape[1:]) for i in range(shape[0])]


def needs_trace(quantities: list[Quantity], step: int) -> bool:
    """Whether any quantity due at `step` reads the hidden states: then the step's forward unrolls."""
    return any(q.needs_trace and q.schedule.due(step) for q in quantities)


class TimeGradNorms(Quantity):
    """‖∂L/∂h_t‖ per layer and time step, from the hidden states' retained gradients."""

    needs_trace = True

    def measure(self, fit, step):
        return {"norms": time_grad_norms(step.trace)}

    def rows(self, fit, step, numbers):
        step.rows.time_grads.extend((step.number, k, t + 1, v) for k, layer in enumerate(numbers["norms"])
                                    for t, v in enumerate(layer))


class GateStats(Quantity):
    """Per gate and time step: the mean activation and the shares closed (< GATE_LOW) and open (> GATE_HIGH).

    Each layer's gates are stacked into one (gates, T, B·H) tensor, so the statistics take a few large ops
    rather than a few per gate and time step."""

    needs_trace = True

    def __init__(self, schedule: Schedule, cell: str):
        super().__init__(schedule)
        self.names = GATE_NAMES[cell]

    def measure(self, fit, step):
        names, G = self.names, len(self.names)
        out = {}
        for k, gates in enumerate(step.trace.gates):
            if names and gates[names[0]]:
                T = len(gates[names[0]])
                g = torch.stack([v for name in names for v in gates[name]]).view(G, T, -1)
                out[str(k)] = torch.stack([g.mean(2), _share(g < GATE_LOW, dim=2), _share(g > GATE_HIGH, dim=2)])
        return out

    def rows(self, fit, step, numbers):
        for k, (means, lows, highs) in numbers.items():
            for j, name in enumerate(self.names):
                step.rows.gates.extend((step.number, int(k), name, t + 1, m, lo, hi)
                                       for t, (m, lo, hi) in enumerate(zip(means[j], lows[j], highs[j])))


class Saturation(Quantity):
    """Per layer, the share of hidden units where the activation's slope is ~0 (see `recorder.saturation`)."""

    needs_trace = True

    def __init__(self, schedule: Schedule, activation: str):
        super().__init__(schedule)
        self.activation = activation

    def measure(self, fit, step):
        return {"share": torch.stack([saturation(torch.stack(layer), self.activation)
                                      for layer in step.trace.hiddens])}

    def rows(self, fit, step, numbers):
        step.rows.metrics.extend((step.number, rd.HIDDEN_SATURATION, k, "", v)
                                 for k, v in enumerate(numbers["share"]))


class Spectrum(Quantity):
    """σ_max of each layer's recurrent matrix (and, for a vanilla RNN, whose matrix alone drives the state, its
    spectral radius); NaN where the matrix holds a non-finite entry. `matrices` are (tensor name, parameter), the
    k-th of layer (lane) k; `radius` says per matrix (or for all) whether its spectral radius is recorded."""

    def __init__(self, schedule: Schedule, matrices: list[tuple[str, Tensor]], radius: bool | list[bool]):
        super().__init__(schedule)
        self.matrices = matrices
        self.radius = radius if isinstance(radius, list) else [radius] * len(matrices)

    def measure(self, fit, step):
        sigma, radius = [], []
        for (_, W), with_radius in zip(self.matrices, self.radius):
            W = W.detach()
            finite = bool(torch.isfinite(W).all())
            sigma.append(torch.linalg.matrix_norm(W, ord=2) if finite else W.new_tensor(math.nan))
            if with_radius:
                radius.append(torch.linalg.eigvals(W).abs().max() if finite else W.new_tensor(math.nan))
        return {"sigma": torch.stack(sigma), **({"radius": torch.stack(radius)} if radius else {})}

    def rows(self, fit, step, numbers):
        radii = iter(numbers.get("radius", ()))
        for k, ((name, _), with_radius) in enumerate(zip(self.matrices, self.radius)):
            step.rows.metrics.append((step.number, rd.SIGMA_MAX, k, name, numbers["sigma"][k]))
            if with_radius:
                step.rows.metrics.append((step.number, rd.SPECTRAL_RADIUS, k, name, next(radii)))


class ParameterNorms(Quantity):
    """Per parameter and per recurrent layer: gradient norm (from the step's scalars), weight norm, max |w| and
    update ratio ‖Δw‖/‖w‖; a NaN/Inf weight is counted in the ledger (unless `ledger` is False). The foreach
    ops take all tensors per call, as the optimisers do, instead of four calls per tensor. Needs
    `step.weights_before`."""

    def __init__(self, schedule: Schedule, layer: Callable[[str], int | None] = layer_of, ledger: bool = True):
        super().__init__(schedule)
        self.layer, self.ledger = layer, ledger

    def measure(self, fit, step):
        after = [p.detach() for p in fit.params]
        before = step.weights_before
        return {"stats": torch.stack([torch.stack(torch._foreach_norm(after)),
                                      torch.stack(torch._foreach_max(torch._foreach_abs(after))),
                                      torch.stack(torch._foreach_norm(torch._foreach_sub(after, before))),
                                      torch.stack(torch._foreach_norm(before))])}

    def rows(self, fit, step, numbers):
        weight, max_abs, delta, before_n = numbers["stats"]
        parameter_rows(step.number, fit.names, step.values["grads"], weight, max_abs, delta, before_n, step.rows,
                       self.layer)
        if not self.ledger:  # the weights are counted where the loop's ledger reads them (`Ledger(weights=True)`)
            return
        bad = [i for i, (w, m) in enumerate(zip(weight, max_abs)) if not (math.isfinite(w) and math.isfinite(m))]
        for i, counts in zip(bad, nonfinite_counts([fit.params[i].detach() for i in bad])):
            if any(counts):
                step.rows.events.append((step.number, rd.EVENT_NONFINITE, fit.names[i], self.layer(fit.names[i]),
                                         None, *counts))
