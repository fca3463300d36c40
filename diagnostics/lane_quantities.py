"""The per-time-step quantities of a watched model, measured on the lanes its twins went through (`twin.Lane`).

A lane's states are in its own processing order; rows of a packed batch start and end at their own loop steps, so
each quantity first aligns every row to its own processing steps (`aligned`) and counts only the steps a row
really took. Row `layer` values are lane indices of the run's `ModelDescription`; `t` is the 1-based processing
step."""

from __future__ import annotations

import torch
from torch import Tensor

from . import rundata as rd
from .cells import GATE_NAMES
from .description import ModelDescription
from .quantities import Quantity
from .recorder import GATE_HIGH, GATE_LOW, SATURATION_SIGMOID, SATURATION_TANH, _share
from .schedules import Schedule
from .twin import Lane


class WatchedTrace:
    """What one recorded step's twins saw: `lanes[k]` is the run's lane k, None when its module was not called
    with gradients on during the step. `hiddens` is what the non-finite ledger reads (empty for such lanes)."""

    def __init__(self, lanes: list[Lane | None]):
        self.lanes = lanes

    @property
    def hiddens(self) -> list[list[Tensor]]:
        return [lane.hiddens if lane is not None else [] for lane in self.lanes]


def aligned(stacked: Tensor, lane: Lane) -> tuple[Tensor, Tensor | None]:
    """`stacked` (loop steps S, B, …) with row b's processing step p at index p, zero where a row has ended,
    and the (S, B) mask of steps taken (None: every row takes every step)."""
    if lane.lengths is None:
        return stacked, None
    S, B = stacked.shape[0], stacked.shape[1]
    p = torch.arange(S).unsqueeze(1)
    taken = p < lane.lengths.unsqueeze(0)
    source = (p + lane.offsets.unsqueeze(0)).clamp(max=S - 1)
    index = source.view(S, B, *([1] * (stacked.dim() - 2))).expand_as(stacked)
    mask = taken.view(S, B, *([1] * (stacked.dim() - 2)))
    return stacked.gather(0, index) * mask, taken


def _grads(lane: Lane) -> Tensor:
    return torch.stack([h.grad if h.grad is not None else torch.zeros_like(h) for h in lane.hiddens])


def _share_per_step(hits: Tensor, taken: Tensor | None) -> Tensor:
    """Per processing step, the share of entries (rows that took the step × units) where `hits` holds."""
    units = hits.shape[-1]
    if taken is None:
        return hits.sum((1, 2), dtype=torch.int32) / (hits.shape[1] * units)
    return (hits & taken.unsqueeze(-1)).sum((1, 2), dtype=torch.int32) / (taken.sum(1) * units)


class LaneTimeGradNorms(Quantity):
    """‖∂L/∂h_t‖ per lane and processing step, from the gradients the user's own backward left in the states."""

    needs_trace = True

    def measure(self, fit, step):
        return {str(k): torch.linalg.vector_norm(aligned(_grads(lane), lane)[0], dim=(1, 2))
                for k, lane in enumerate(step.trace.lanes) if lane is not None}

    def rows(self, fit, step, numbers):
        step.rows.time_grads.extend((step.number, int(k), t + 1, v) for k, profile in numbers.items()
                                    for t, v in enumerate(profile))


class LaneGateStats(Quantity):
    """Per lane, gate and processing step: the mean activation and the shares closed and open."""

    needs_trace = True

    def __init__(self, schedule: Schedule, model: ModelDescription):
        super().__init__(schedule)
        self.cells = [lane.module.cell for lane in model.lanes()]

    def measure(self, fit, step):
        out = {}
        for k, lane in enumerate(step.trace.lanes):
            names = GATE_NAMES[self.cells[k]]
            if lane is None or not names or not lane.gates.get(names[0]):
                continue
            if lane.lengths is None:  # every row takes every step: all gates in one (G, T, B·H) tensor, few ops
                S = len(lane.gates[names[0]])
                g = torch.stack([v for name in names for v in lane.gates[name]]).view(len(names), S, -1)
                stats = torch.stack([g.mean(2), _share(g < GATE_LOW, dim=2), _share(g > GATE_HIGH, dim=2)])
                for j, name in enumerate(names):
                    out[f"{k}:{name}"] = stats[:, j]
                continue
            for name in names:
                g, taken = aligned(torch.stack(lane.gates[name]), lane)
                count = taken.sum(1) * g.shape[2]
                out[f"{k}:{name}"] = torch.stack([g.sum((1, 2)) / count, _share_per_step(g < GATE_LOW, taken),
                                                  _share_per_step(g > GATE_HIGH, taken)])
        return out

    def rows(self, fit, step, numbers):
        for key, (means, lows, highs) in numbers.items():
            k, name = key.split(":")
            step.rows.gates.extend((step.number, int(k), name, t + 1, m, lo, hi)
                                   for t, (m, lo, hi) in enumerate(zip(means, lows, highs)))


class LaneSaturation(Quantity):
    """Per lane, the share of hidden units, over the steps each row took, where the activation is flat (as
    `recorder.saturation`: tanh |h| > 0.99, ReLU units dead over the whole batch and every step)."""

    needs_trace = True

    def __init__(self, schedule: Schedule, model: ModelDescription):
        super().__init__(schedule)
        self.activations = [lane.module.activation_of_state for lane in model.lanes()]

    def measure(self, fit, step):
        out = {}
        for k, lane in enumerate(step.trace.lanes):
            if lane is None:
                continue
            h, taken = aligned(torch.stack(lane.hiddens), lane)
            taken = torch.ones(h.shape[:2], dtype=torch.bool) if taken is None else taken
            if self.activations[k] == "relu":
                alive = ((h > 0) & taken.unsqueeze(-1)).any(0).any(0)
                out[str(k)] = (~alive).float().mean()
            else:
                flat = h.abs() > SATURATION_TANH if self.activations[k] == "tanh" else \
                    (h < SATURATION_SIGMOID) | (h > 1 - SATURATION_SIGMOID)
                out[str(k)] = (flat & taken.unsqueeze(-1)).sum(dtype=torch.int32) / (taken.sum() * h.shape[2])
        return out

    def rows(self, fit, step, numbers):
        step.rows.metrics.extend((step.number, rd.HIDDEN_SATURATION, int(k), "", v) for k, v in numbers.items())
