"""Recurrent cells written out, so every hidden state and every gate is an ordinary tensor in the graph.

PyTorch's fused `nn.RNN/LSTM/GRU` hide the per-time-step states, so ∂L/∂h_t and gate activations
cannot be observed through them. Here time is unrolled in a visible loop (`h_t = step(x_t, h_prev)`)
that keeps every h_t. Parameters use PyTorch's names, shapes and gate order (LSTM i, f, g, o; GRU r, z, n),
so weights copy both ways and the fused modules serve as test oracles. The same layout lets `fastpath` run the
fused kernels on these very parameters for training steps that record nothing per time step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GATE_BLOCKS = {"rnn": 1, "lstm": 4, "gru": 3}
# Gate names as recorded and shown; values are the post-nonlinearity activations.
GATE_NAMES = {"rnn": (), "lstm": ("input", "forget", "candidate", "output"), "gru": ("reset", "update", "candidate")}
ACTIVATION_FNS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "linear": lambda a: a}


@dataclass
class Trace:
    """What one forward pass saw. `hiddens[layer][t]` are graph nodes: call `retain_grad()` or hook them."""

    outputs: Tensor  # (B, T, H): the last layer's hidden states
    hiddens: list[list[Tensor]]  # per layer, per time step: (B, H)
    gates: list[dict[str, list[Tensor]]] = field(default_factory=list)  # per layer: gate name -> per t (B, H)
    cells: list[list[Tensor]] = field(default_factory=list)  # LSTM cell states, per layer, per t


def rnn_step(xw_t: Tensor, h_prev: Tensor, W_hh_T: Tensor, act) -> tuple[Tensor, dict[str, Tensor]]:
    """Elman step h_t = act(W_ih x_t + b_ih + W_hh h_prev + b_hh); `xw_t` holds the input part and both biases."""
    return act(torch.addmm(xw_t, h_prev, W_hh_T)), {}


def lstm_step(xw_t: Tensor, h_prev: Tensor, c_prev: Tensor, W_hh_T: Tensor):
    """LSTM step (Hochreiter & Schmidhuber 1997, with forget gate): the cell state c_t is what gates keep.

    `xw_t` holds W_ih x_t and both biases. Few, fused ops, because each op in this loop costs a Python call
    and an autograd node: one addmm; one sigmoid over all four blocks (the candidate block's result is unused,
    which is cheaper than a call per block); addcmul."""
    H = h_prev.shape[-1]
    pre = torch.addmm(xw_t, h_prev, W_hh_T)
    i, f, _, o = pre.sigmoid().chunk(4, dim=-1)
    g = pre[:, 2 * H:3 * H].tanh()
    c_t = torch.addcmul(f * c_prev, i, g)
    h_t = o * c_t.tanh()
    return h_t, c_t, {"input": i, "forget": f, "candidate": g, "output": o}


def gru_step(xw_rz_t: Tensor, xw_n_t: Tensor, h_prev: Tensor, W_hh_T: Tensor, b_hh: Tensor):
    """GRU step (Cho et al. 2014) in PyTorch's form: the reset gate multiplies W_hn h + b_hn.

    `xw_rz_t`, `xw_n_t` are W_ih x_t + b_ih split into the reset/update and candidate blocks."""
    H = h_prev.shape[-1]
    hw = torch.addmm(b_hh, h_prev, W_hh_T)
    r, z = (xw_rz_t + hw[:, :2 * H]).sigmoid().chunk(2, dim=-1)
    n = torch.addcmul(xw_n_t, r, hw[:, 2 * H:]).tanh()
    h_t = torch.addcmul(n, z, h_prev - n)  # (1 - z)·n + z·h_prev in two ops
    return h_t, {"reset": r, "update": z, "candidate": n}


class RecurrentNet(nn.Module):
    """A stack of 1–4 recurrent layers with PyTorch's parameter layout, unrolled in Python."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 activation: str = "tanh"):
        super().__init__()
        if cell not in GATE_BLOCKS:
            raise ValueError(f"cell={cell!r} is not valid; allowed: {', '.join(GATE_BLOCKS)}")
        if activation not in ACTIVATION_FNS:
            raise ValueError(f"activation={activation!r} is not valid; allowed: {', '.join(ACTIVATION_FNS)}")
        self.cell, self.activation = cell, activation
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        gh = GATE_BLOCKS[cell] * hidden_size
        bound = 1 / math.sqrt(hidden_size)
        for k in range(num_layers):
            in_k = input_size if k == 0 else hidden_size
            for name, shape in ((f"weight_ih_l{k}", (gh, in_k)), (f"weight_hh_l{k}", (gh, hidden_size)),
                                (f"bias_ih_l{k}", (gh,)), (f"bias_hh_l{k}", (gh,))):
                # PyTorch's own default; `initialisers.initialise` replaces it per the config.
                self.register_parameter(name, nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def layer_params(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
                getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}"))

    def forward(self, x: Tensor, h0: Tensor | None = None, c0: Tensor | None = None,
                keep_gates: bool = True) -> Trace:
        """Unroll over x (B, T, input_size) or, for layer 0, token ids (B, T) standing for one-hot inputs."""
        B, T = x.shape[0], x.shape[1]
        H = self.hidden_size
        hiddens, gates, cells = [], [], []
        layer_in = x
        for k in range(self.num_layers):
            W_ih, W_hh, b_ih, b_hh = self.layer_params(k)
            # The LSTM and vanilla cells add b_hh outside any gate, so it joins the precomputed input part;
            # the GRU's b_hn sits inside r·(W_hn h + b_hn) and stays in the loop.
            bias = b_ih if self.cell == "gru" else b_ih + b_hh
            # Input projections for all time steps in one matmul; only h_prev @ W_hh stays in the loop.
            if layer_in.dtype == torch.long:
                # A one-hot row times W_ih^T is a row lookup. `embedding` on a contiguous copy gathers whole rows
                # and sums their gradients in one pass: ~3x faster than indexing the strided W_ih.T.
                xw = F.embedding(layer_in, W_ih.T.contiguous()) + bias
            else:
                xw = layer_in @ W_ih.T + bias
            # One unbind instead of T slices: each slice's backward would fill a zero tensor of the full
            # (B, T, G·H) size, which made the loop's backward grow with T².
            if self.cell == "gru":
                xs_rz, xs_n = xw[..., :2 * H].unbind(1), xw[..., 2 * H:].unbind(1)
            else:
                xs = xw.unbind(1)
            W_hh_T = W_hh.T
            h = x.new_zeros((B, H), dtype=W_hh.dtype) if h0 is None else h0[k]
            c = x.new_zeros((B, H), dtype=W_hh.dtype) if c0 is None else c0[k]
            hs, cs = [], []
            gs: dict[str, list[Tensor]] = {name: [] for name in GATE_NAMES[self.cell]}
            act = ACTIVATION_FNS[self.activation]
            for t in range(T):
                if self.cell == "lstm":
                    h, c, g = lstm_step(xs[t], h, c, W_hh_T)
                    cs.append(c)
                elif self.cell == "gru":
                    h, g = gru_step(xs_rz[t], xs_n[t], h, W_hh_T, b_hh)
                else:
                    h, g = rnn_step(xs[t], h, W_hh_T, act)
                hs.append(h)
                if keep_gates:
                    for name, value in g.items():
                        gs[name].append(value)
            hiddens.append(hs)
            gates.append(gs)
            cells.append(cs)
            layer_in = torch.stack(hs, dim=1)
        return Trace(outputs=layer_in, hiddens=hiddens, gates=gates, cells=cells)
