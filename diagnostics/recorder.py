"""What a training step records: cheap scalars every step, per-time-step quantities on a schedule.

The recorder turns one step's tensors into tidy rows (see `rundata`) and hands them to a sink (memory or
the store). Numbers leave the graph in one `torch.stack(...).tolist()` per batch of quantities instead of
one `.item()` per tensor. NaN/Inf is data: it is counted and located, never dropped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from . import rundata as rd
from .cells import GATE_NAMES, Trace

_LAYER = re.compile(r"^rnn\.\w+_l(\d+)$")
SATURATION_TANH = 0.99  # |h| above this: tanh'(h) < 0.02, the unit passes almost no gradient
SATURATION_SIGMOID = 0.01  # sigmoid within this of 0 or 1: sigmoid'(h) < 0.01
GATE_LOW, GATE_HIGH = 0.1, 0.9  # gate "closed" / "open" for the saturation shares


def layer_of(param_name: str) -> int | None:
    """Recurrent layer index of a parameter (`rnn.weight_hh_l1` → 1), None for the readout."""
    m = _LAYER.match(param_name)
    return int(m.group(1)) if m else None


def is_recorded(step: int, record_every: int) -> bool:
    """The per-time-step schedule: the first step and every `record_every`-th (0 turns it off)."""
    return record_every > 0 and (step == 1 or step % record_every == 0)


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


@dataclass
class StepRows:
    """Rows of one step, in `rundata` column order."""

    metrics: list[tuple] = field(default_factory=list)
    time_grads: list[tuple] = field(default_factory=list)
    gates: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)


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


@torch.no_grad()  # the statistics are data, not graph: without this every op would build autograd nodes
def per_time_step_rows(step: int, trace: Trace, model: nn.Module, cell: str, activation: str,
                       rows: StepRows) -> None:
    """Gradient through time, gates, saturation and spectra of a recorded step, in one batch.

    Each layer's gates are stacked into one (gates, T, B·H) tensor, so the statistics take a few large ops
    rather than a few per gate and time step."""
    norms = time_grad_norms(trace)  # (L, T)
    L, T = norms.shape
    quantities = [norms.flatten()]
    names, G = GATE_NAMES[cell], len(GATE_NAMES[cell])
    gate_layers = [k for k, gates in enumerate(trace.gates) if names and gates[names[0]]]
    for k in gate_layers:
        g = torch.stack([v for name in names for v in trace.gates[k][name]]).view(G, T, -1)
        quantities += [g.mean(2), _share(g < GATE_LOW, dim=2), _share(g > GATE_HIGH, dim=2)]
    act = activation if cell == "rnn" else "tanh"
    sat = [saturation(torch.stack(layer), act) for layer in trace.hiddens]
    spectral = []
    for k in range(len(trace.hiddens)):
        W_hh = getattr(model.rnn, f"weight_hh_l{k}").detach()
        if not torch.isfinite(W_hh).all():
            spectral += [W_hh.new_tensor(math.nan)] * (2 if cell == "rnn" else 1)
            continue
        spectral.append(torch.linalg.matrix_norm(W_hh, ord=2))
        if cell == "rnn":  # a square matrix: its eigenvalues govern long-run growth
            spectral.append(torch.linalg.eigvals(W_hh).abs().max())
    flat = torch.cat([q.flatten() for q in quantities] + [torch.stack(sat + spectral)]).tolist()

    pos = 0
    for k in range(L):
        for t in range(T):
            rows.time_grads.append((step, k, t + 1, flat[pos]))
            pos += 1
    for k in gate_layers:  # per layer: means, then shares low, then shares high, each (G, T) row-major
        means, lows, highs = (flat[pos + i * G * T:pos + (i + 1) * G * T] for i in range(3))
        for j, name in enumerate(names):
            rows.gates.extend((step, k, name, t + 1, means[j * T + t], lows[j * T + t], highs[j * T + t])
                              for t in range(T))
        pos += 3 * G * T
    for k in range(L):
        rows.metrics.append((step, rd.HIDDEN_SATURATION, k, "", flat[pos]))
        pos += 1
    for k in range(L):
        name = f"rnn.weight_hh_l{k}"
        rows.metrics.append((step, rd.SIGMA_MAX, k, name, flat[pos]))
        pos += 1
        if cell == "rnn":
            rows.metrics.append((step, rd.SPECTRAL_RADIUS, k, name, flat[pos]))
            pos += 1


def _nan_first(v: float) -> tuple[bool, float]:
    """Sort key under which NaN is the largest value, so a NaN weight wins `max`."""
    return (math.isnan(v), v)


def parameter_rows(step: int, names: list[str], grad_norms: list[float], weight_norms: list[float],
                   max_abs: list[float], delta_norms: list[float], before_norms: list[float],
                   rows: StepRows) -> None:
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
