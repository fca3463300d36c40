"""The optimisers a lab run can use, by name: `RunConfig.optimizer`'s allowed values are this registry's keys."""

from __future__ import annotations

from typing import Callable

import torch


def _sgd(params, *, lr: float, momentum: float) -> torch.optim.Optimizer:
    """SGD with momentum shows vanishing gradients as they are: a tiny gradient makes a tiny step."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def _adam(params, *, lr: float, momentum: float) -> torch.optim.Optimizer:
    """Adam divides by the gradient's running RMS, so it rescales tiny gradients and can hide them."""
    return torch.optim.Adam(params, lr=lr)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"sgd": _sgd, "adam": _adam}


def make_optimizer(name: str, params, *, lr: float, momentum: float) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr=lr, momentum=momentum)
