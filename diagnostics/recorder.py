"""The recorder's parts: sinks that keep a run's rows, and the measurements and ledger helpers that the
quantities (see `quantities`) and the non-finite ledger are built from. NaN/Inf is data: it is counted and
located, never dropped.
"""

from __future__ import annotations

import math
import re
from typing import Callable

import torch
from torch import Tensor

from . import rundata as rd
from .cells import Trace

_LAYER = re.compile(r"^rnn\.\w+_l(\d+)$")
SATURATION_TANH = 0.99  # |h| above this: tanh'(h) < 0.02, the unit passes almost no gradient
SATURATION_SIGMOID = 0.01  # sigmoid within this of 0 or 1: sigmoid'(h) < 0.01
GATE_LOW, GATE_HIGH = 0.1, 0.9  # gate "closed" / "open" for the saturation shares


def layer_of(param_name: str) -> int | None:
    """Recurrent layer index of a parameter (`rnn.weight_hh_l1` → 1), None for the readout."""
    m = _LAYER.match(param_name)
    return int(m.group(1)) if m else None


class MemorySink:
    """Keeps every row in lists; `data()` gives the run as a `RunData` (what tests and the API return)."""

    def __init__(self):
        self.rows: dict[str, list] = {"metrics": [], "time_grads": [], "gates": [], "events": []}

    def add(self, step: int, metrics=(), time_grads=(), gates=(), events=()) -> None:
        for key, rows in (("metrics", metrics), ("time_grads", time_grads), ("gates", gates),
                          ("events", events)):
            self.rows[key].extend(rows)

    def data(self) -> rd.RunData:
        return rd.RunData(metrics=rd.frame(self.rows["metrics"], rd.METRIC_COLUMNS),
                          time_grads=rd.frame(self.rows["time_grads"], rd.TIME_GRAD_COLUMNS),
                          gates=rd.frame(self.rows["gates"], rd.GATE_COLUMNS),
                          events=rd.frame(self.rows["events"], rd.EVENT_COLUMNS))


def nonfinite_counts(tensors: list[Tensor]) -> list[tuple[int, int, int]]:
    """(NaN, +Inf, −Inf) counts per tensor, in one batch."""
    if not tensors:
        return []
    counts = torch.stack([torch.stack([t.isnan().sum(), t.isposinf().sum(), t.isneginf().sum()])
                          for t in tensors])
    return [tuple(row) for row in counts.tolist()]


def retain_hidden_grads(trace: Trace) -> None:
    """Ask autograd to keep ∂L/∂h_t of every hidden state (retain_grad costs a few percent; a separate
    `autograd.grad` pass would cost a third of a step)."""
    for layer in trace.hiddens:
        for h in layer:
            h.retain_grad()


def time_grad_norms(trace: Trace) -> Tensor:
    """‖∂L/∂h_t‖ (Frobenius norm over batch and units) as a (layers, T) tensor; a state that received
    no gradient counts as 0. One norm per layer over the stacked gradients, not one per time step."""
    return torch.stack([torch.linalg.vector_norm(torch.stack([h.grad if h.grad is not None else torch.zeros_like(h)
                                                              for h in layer]), dim=(1, 2))
                        for layer in trace.hiddens])


def first_nonfinite_hidden(trace: Trace) -> tuple[int, int, tuple[int, int, int]] | None:
    """(layer, 1-based time step, counts) of the earliest non-finite hidden state in forward order."""
    for k, layer in enumerate(trace.hiddens):
        if not layer:  # a watched module that was not called on this step
            continue
        stacked = torch.stack(layer)  # (T, B, H)
        bad = ~torch.isfinite(stacked).flatten(1).all(dim=1)
        if bad.any():
            t = int(bad.nonzero()[0])
            return k, t + 1, nonfinite_counts([stacked[t]])[0]
    return None


def first_nonfinite_hidden_grad(hidden_grads: list[list[Tensor | None]]) -> tuple[int, int, tuple] | None:
    """(layer, time step, counts) where a non-finite ∂L/∂h_t appears first in backward order (largest t)."""
    for k in reversed(range(len(hidden_grads))):
        for t in reversed(range(len(hidden_grads[k]))):
            g = hidden_grads[k][t]
            if g is not None and not torch.isfinite(g).all():
                return k, t + 1, nonfinite_counts([g])[0]
    return None


def _share(mask: Tensor, dim=None) -> Tensor:
    """Share of True entries (NaN compares False, so it never counts). Summing the bool mask into int32 skips
    the float copy that `.float().mean()` makes, which made these shares the dearest part of a recorded step."""
    if dim is None:
        return mask.sum(dtype=torch.int32) / mask.numel()
    return mask.sum(dim, dtype=torch.int32) / mask.shape[dim]


def saturation(h: Tensor, activation: str) -> Tensor:
    """Share of hidden units (over batch, time) stuck where the activation's derivative is ~0.

    ReLU counts a unit dead when it is zero for the whole batch at every time step."""
    if activation == "relu":
        return (h.flatten(0, -2) <= 0).all(dim=0).float().mean()
    if activation == "sigmoid":
        return _share((h < SATURATION_SIGMOID) | (h > 1 - SATURATION_SIGMOID))
    if activation == "linear":
        return h.new_zeros(())
    return _share(h.abs() > SATURATION_TANH)


def _nan_first(v: float) -> tuple[bool, float]:
    """Sort key under which NaN is the largest value, so a NaN weight wins `max`."""
    return (math.isnan(v), v)


def parameter_rows(step: int, names: list[str], grad_norms: list[float], weight_norms: list[float],
                   max_abs: list[float], delta_norms: list[float], before_norms: list[float],
                   rows: rd.StepRows, layer_of: Callable[[str], int | None] = layer_of) -> None:
    """Per-tensor rows plus per-recurrent-layer aggregates (L2 over the layer's tensors, max of max)."""
    layers: dict[int, list[int]] = {}
    for i, name in enumerate(names):
        layer = layer_of(name)
        ratio = delta_norms[i] / before_norms[i] if before_norms[i] > 0 else math.nan
        rows.metrics += [(step, rd.GRAD_NORM, layer, name, grad_norms[i]),
                         (step, rd.WEIGHT_NORM, layer, name, weight_norms[i]),
                         (step, rd.WEIGHT_MAX_ABS, layer, name, max_abs[i]),
                         (step, rd.UPDATE_RATIO, layer, name, ratio)]
        if layer is not None:
            layers.setdefault(layer, []).append(i)
    for layer, idx in sorted(layers.items()):
        def l2(values):
            return math.sqrt(sum(values[i] ** 2 for i in idx))
        before = l2(before_norms)
        rows.metrics += [(step, rd.GRAD_NORM, layer, "", l2(grad_norms)),
                         (step, rd.WEIGHT_NORM, layer, "", l2(weight_norms)),
                         (step, rd.WEIGHT_MAX_ABS, layer, "", max((max_abs[i] for i in idx), key=_nan_first)),
                         (step, rd.UPDATE_RATIO, layer, "", l2(delta_norms) / before if before > 0 else math.nan)]
