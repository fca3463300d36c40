"""Gradient clipping by name: `RunConfig.clip`'s allowed values are this registry's keys.

Each clipper takes the parameters, the threshold and the global pre-clip norm (already computed from the
recorded per-tensor norms, which saves a second pass over every gradient) and returns whether it changed
anything."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


def _none(params: list[nn.Parameter], threshold: float, pre: Tensor) -> Tensor:
    return torch.zeros((), dtype=torch.bool)


def _norm(params: list[nn.Parameter], threshold: float, pre: Tensor) -> Tensor:
    """Pascanu et al. 2013: rescale the whole gradient when its norm exceeds the threshold."""
    torch.nn.utils.clip_grads_with_norm_(params, threshold, pre)
    return pre > threshold


def _value(params: list[nn.Parameter], threshold: float, pre: Tensor) -> Tensor:
    """Clamp every entry to ±threshold; it changes the gradient's direction, not only its length."""
    fired = torch.stack([p.grad.abs().max() for p in params]).max() > threshold
    torch.nn.utils.clip_grad_value_(params, threshold)
    return fired


CLIPPERS: dict[str, Callable[[list[nn.Parameter], float, Tensor], Tensor]] = {
    "none": _none, "norm": _norm, "value": _value}


def clip_gradients(clip: str, threshold: float, params: list[nn.Parameter],
                   grad_norms: Tensor) -> tuple[Tensor, Tensor]:
    """Apply clipping `clip` to gradients whose per-tensor norms are `grad_norms`; returns (pre-clip global norm,
    whether it changed anything)."""
    # The global norm is the norm of the per-tensor norms, as clip_grad_norm_ computes it.
    pre = torch.linalg.vector_norm(grad_norms)
    return pre, CLIPPERS[clip](params, threshold, pre)
