"""Weight initialisation schemes for recurrent nets, to show how the start point decides explode vs vanish.

Works on any module with PyTorch's recurrent layout (``torch.nn.RNN/LSTM/GRU`` and the project's own
net): per layer k, ``weight_ih_l{k}`` (G·H × in_k), ``weight_hh_l{k}`` (G·H × H), ``bias_ih_l{k}`` and
``bias_hh_l{k}`` (G·H), with G gate blocks stacked along the rows (LSTM: i, f, g, o; GRU: r, z, n).

Every scheme is applied per gate block: each H-row block is initialised as its own H × in matrix, so
fan-out is H (not G·H) and orthogonal / identity blocks are square and exactly orthogonal.

After the scheme, ``init_scale`` multiplies every recurrent matrix ``weight_hh``. For ``"normal"`` the
scheme draws N(0, 1/H), so this single multiplication makes ``init_scale`` the standard-deviation
factor, N(0, init_scale²/H) — it is applied once, never twice. The bias of the gate that keeps the state
(the LSTM's forget gate, the GRU's update gate) is then set to ``forget_bias`` (see `initialise`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .cells import ACTIVATION_FNS as ACTIVATIONS
from .cells import GATE_BLOCKS as CELLS  # cell -> number of gate blocks G

IDENTITY_INPUT_STD = 0.001  # Le et al. 2015 (IRNN): input weights ~ N(0, 0.001²)


def gain(activation: str) -> float:
    """Gain that keeps the activation's output variance equal to its input's (He et al. 2015)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    # relu √2 (He et al. 2015), tanh 5/3, sigmoid 1, linear 1.
    return torch.nn.init.calculate_gain(activation)


def _default(w, *, recurrent, cell, activation, generator):
    """PyTorch's own init, U(−1/√H, 1/√H), as the baseline every other scheme is compared to."""
    bound = 1.0 / math.sqrt(w.shape[0])
    w.uniform_(-bound, bound, generator=generator)


def _glorot_gain(cell: str, activation: str) -> float:
    """Gain for Glorot's schemes: the activation's for a plain RNN, 1 for gated cells."""
    # Gated cells mix sigmoid gates with a tanh candidate, and Glorot & Bengio 2010 derive their
    # variance in the linear regime around 0, where a sigmoid's slope (1/4) is not tanh's (1):
    # no single activation gain fits all blocks, so gated cells use gain 1, as Keras and most LSTM code do.
    return gain(activation) if cell == "rnn" else 1.0


def _xavier_uniform(w, *, recurrent, cell, activation, generator):
    """Glorot & Bengio 2010: variance 2/(fan_in+fan_out)·gain², balancing the forward and backward pass."""
    fan_out, fan_in = w.shape
    bound = _glorot_gain(cell, activation) * math.sqrt(6.0 / (fan_in + fan_out))
    w.uniform_(-bound, bound, generator=generator)


def _xavier_normal(w, *, recurrent, cell, activation, generator):
    """Glorot & Bengio 2010 with a Gaussian of the same variance."""
    fan_out, fan_in = w.shape
    std = _glorot_gain(cell, activation) * math.sqrt(2.0 / (fan_in + fan_out))
    w.normal_(0.0, std, generator=generator)


def _he(w, *, recurrent, cell, activation, generator):
    """He et al. 2015 (fan_in mode): std = gain/√fan_in keeps forward activations' variance constant."""
    w.normal_(0.0, gain(activation) / math.sqrt(w.shape[1]), generator=generator)


def _orthogonal(w, *, recurrent, cell, activation, generator):
    """Saxe et al. 2014: all singular values 1, so repeated multiplication neither grows nor shrinks."""
    rows, cols = w.shape
    a = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))  # sign correction makes Q Haar-distributed, not biased by QR
    w.copy_(q if rows >= cols else q.T)  # (semi-)orthogonal: orthonormal columns or rows


def _identity(w, *, recurrent, cell, activation, generator):
    """Le et al. 2015 (IRNN): identity recurrence copies the state forward, tiny input weights."""
    if recurrent:
        w.copy_(torch.eye(*w.shape))
    else:
        w.normal_(0.0, IDENTITY_INPUT_STD, generator=generator)


def _normal(w, *, recurrent, cell, activation, generator):
    """Large-variance normal: N(0, 1/H) recurrence has spectral radius ≈ 1 (circular law), scaled later."""
    # init_scale multiplies this afterwards (see the module docstring), giving N(0, init_scale²/H).
    w.normal_(0.0, 1.0 / math.sqrt(w.shape[1]), generator=generator)


# Each function fills one H-row gate block `w` in place; `recurrent` tells weight_hh from weight_ih.
INITIALISERS: dict[str, Callable] = {
    "default": _default,
    "xavier_uniform": _xavier_uniform,
    "xavier_normal": _xavier_normal,
    "he": _he,
    "orthogonal": _orthogonal,
    "identity": _identity,
    "normal": _normal,
}


def recurrent_matrices(rnn: torch.nn.Module) -> list[torch.Tensor]:
    """Each layer's live weight_hh parameter, whose spectrum decides whether gradients explode or vanish."""
    return [getattr(rnn, f"weight_hh_l{k}") for k in range(rnn.num_layers)]


def _check(rnn: torch.nn.Module, cell: str, activation: str, init: str) -> None:
    """Reject names and layouts we would otherwise initialise silently wrong."""
    if init not in INITIALISERS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITIALISERS)}")
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; allowed: {', '.join(CELLS)}")
    gain(activation)
    if getattr(rnn, "bidirectional", False):
        raise ValueError("bidirectional modules are not supported: their _reverse weights would be skipped")
    H = rnn.hidden_size
    for k in range(rnn.num_layers):
        in_k = rnn.input_size if k == 0 else H
        shapes = (getattr(rnn, f"weight_ih_l{k}").shape, getattr(rnn, f"weight_hh_l{k}").shape)
        expected = ((CELLS[cell] * H, in_k), (CELLS[cell] * H, H))
        if shapes != expected:
            raise ValueError(f"layer {k} of a {cell} with H={H} should have weight_ih, weight_hh of shapes "
                             f"{expected}, got {tuple(tuple(s) for s in shapes)}")


# Cells whose block 1 is the gate that keeps the state: LSTM forget gate f, GRU update gate z.
KEEP_GATE_CELLS = ("lstm", "gru")


def initialise(rnn: torch.nn.Module, *, cell: str, activation: str, init: str, init_scale: float = 1.0,
               forget_bias: float = 0.0, generator: torch.Generator | None = None) -> None:
    """Put the recurrent net in a chosen, reproducible start state (in place, all draws from `generator`)."""
    _check(rnn, cell, activation, init)
    if cell != "rnn":
        activation = "tanh"  # the candidate / output nonlinearity of LSTM and GRU
    fill = INITIALISERS[init]
    H = rnn.hidden_size
    with torch.no_grad():
        for k in range(rnn.num_layers):
            for name, recurrent in ((f"weight_ih_l{k}", False), (f"weight_hh_l{k}", True)):
                for block in getattr(rnn, name).split(H):
                    fill(block, recurrent=recurrent, cell=cell, activation=activation, generator=generator)
            for name in (f"bias_ih_l{k}", f"bias_hh_l{k}"):
                bias = getattr(rnn, name, None)  # absent when the module was built with bias=False
                if bias is None:
                    continue
                if init == "default":
                    bias.uniform_(-1.0 / math.sqrt(H), 1.0 / math.sqrt(H), generator=generator)
                else:
                    bias.zero_()
            getattr(rnn, f"weight_hh_l{k}").mul_(init_scale)
            if cell in KEEP_GATE_CELLS and getattr(rnn, f"bias_ih_l{k}", None) is not None:
                # Jozefowicz et al. 2015: a forget bias of 1 keeps the cell state (and its gradient) flowing
                # early in training; the GRU's update gate z (block 1: r, z, n) keeps h_{t-1} where z ≈ 1, so
                # the same bias opens it. bias_hh's block is zeroed so the effective bias is exactly forget_bias.
                getattr(rnn, f"bias_ih_l{k}")[H:2 * H] = forget_bias
                getattr(rnn, f"bias_hh_l{k}")[H:2 * H] = 0.0
