"""Written-out twins of PyTorch's fused `nn.RNN`, `nn.LSTM` and `nn.GRU`, run on the module's own parameters.

A fused module hides its hidden states: its gradients arrive summed over time. `watch` runs a user's module
through its twin on recorded steps, so the user's own `loss.backward()` fills ∂L/∂h_t of every time step, layer
and direction. The twin computes what the module computes — outputs and every gradient within 1e-5 — with
`batch_first` either way, several layers, both directions, dropout between layers (the same random draws in the
same order, so a seeded run goes on as it would have), a given `h0`/`c0`, unbatched inputs and `PackedSequence`s
of different lengths. What it cannot stand in for is refused by `refusal`, with the reason."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from .cells import GATE_BLOCKS, GATE_NAMES, gru_step, lstm_step, rnn_step

CELL_OF = {nn.RNN: "rnn", nn.LSTM: "lstm", nn.GRU: "gru"}
NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


@dataclass
class Lane:
    """One layer and direction of a module's recurrence. `hiddens[s]` is the state after loop step s, which is
    this direction's own processing order (position T−s for the reverse one); with sequences of different lengths
    row b starts its processing at loop step `offsets[b]` and takes `lengths[b]` steps."""

    layer: int
    direction: int  # 0 forward, 1 reverse
    hiddens: list[Tensor]  # per loop step: (B, H) graph nodes
    gates: dict[str, list[Tensor]] = field(default_factory=dict)  # gate name -> per loop step (B, H)
    offsets: Tensor | None = None  # (B,) long; None: every row starts at loop step 0
    lengths: Tensor | None = None  # (B,) long; None: every row is T long


def cell_of(module: nn.Module) -> str | None:
    """"rnn", "lstm" or "gru" for PyTorch's recurrent modules and their subclasses, else None."""
    for kind, name in CELL_OF.items():
        if isinstance(module, kind):
            return name
    return None


def refusal(path: str, module: nn.Module) -> str | None:
    """Why the twin cannot stand in for this recurrent module (named by its path), or None when it can."""
    cell = cell_of(module)
    base = next(kind for kind in CELL_OF if isinstance(module, kind))
    if type(module).forward is not base.forward:
        return (f"{path or 'the model'} is a {type(module).__name__}, a subclass of nn.{base.__name__} with its own "
                "forward, which watch cannot run written out")
    if cell == "lstm" and module.proj_size:
        return (f"{path or 'the model'} is an nn.LSTM with proj_size={module.proj_size}; LSTMs with projections "
                "are not supported (watch supports nn.RNN, nn.GRU and nn.LSTM without proj_size)")
    if parametrize.is_parametrized(module):
        return (f"{path or 'the model'} has parametrized weights ({', '.join(module.parametrizations)}); watch "
                "records the parameters a module holds, so it does not support parametrizations")
    if module.mode not in ("RNN_TANH", "RNN_RELU", "LSTM", "GRU"):
        return f"{path or 'the model'} runs the recurrence {module.mode!r}, which watch does not know"
    return None


def activation_of(module: nn.Module) -> str:
    """The nonlinearity the hidden state passes through: nn.RNN's own, tanh for the gated cells."""
    return getattr(module, "nonlinearity", "tanh") if cell_of(module) == "rnn" else "tanh"


def lane_count(module: nn.Module) -> int:
    return module.num_layers * (2 if module.bidirectional else 1)


def twin_forward(module: nn.Module, input, hx=None, keep_gates: bool = True):
    """What `module(input, hx)` returns, computed step by step on its parameters, and the lanes it went through
    (layer-major, forward before reverse)."""
    cell = cell_of(module)
    directions, H = (2 if module.bidirectional else 1), module.hidden_size
    packed = isinstance(input, PackedSequence)
    unbatched = not packed and input.dim() == 2
    if packed:
        data, batch_sizes, sorted_indices, unsorted_indices = input
        sizes = batch_sizes.tolist()
        B = sizes[0]
        rows = torch.arange(B).unsqueeze(0)
        active = rows < batch_sizes.unsqueeze(1)  # (T, B): row b (in sorted order) is still in its sequence
        lengths = active.sum(0)
        active = active.to(data.device)
        reference = data
    else:
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if module.batch_first else input)
        B = x.shape[1]
        active = lengths = sorted_indices = None
        reference = x
    h0, c0 = _initial_states(module, cell, hx, B, H, reference, unbatched, sorted_indices)
    h_n, c_n, lanes = [], [], []
    layer_in = data if packed else x
    for layer in range(module.num_layers):
        padded = _padded(layer_in, sizes, B) if packed else layer_in
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            lane, out, h_last, c_last = _direction(module, cell, padded, layer, direction, h0[k],
                                                   None if c0 is None else c0[k], active, lengths, keep_gates)
            lanes.append(lane)
            outputs.append(out)
            h_n.append(h_last)
            c_n.append(c_last)
        layer_out = torch.cat(outputs, dim=2) if directions == 2 else outputs[0]
        if packed:
            layer_out = torch.cat([layer_out[t, :size] for t, size in enumerate(sizes)])
        if module.dropout and module.training and layer < module.num_layers - 1:
            # PyTorch draws the dropout mask over the layer's whole output (packed data for a packed input), in
            # memory order, from the global generator: the same shape draws the same mask.
            layer_out = F.dropout(layer_out, module.dropout, training=True)
        layer_in = layer_out
    h_n = torch.stack(h_n)
    c_n = torch.stack(c_n) if cell == "lstm" else None
    if packed:
        output = PackedSequence(layer_in, batch_sizes, sorted_indices, unsorted_indices)
        if unsorted_indices is not None:
            h_n = h_n.index_select(1, unsorted_indices)
            c_n = c_n.index_select(1, unsorted_indices) if c_n is not None else None
    elif unbatched:
        output, h_n = layer_in.squeeze(1), h_n.squeeze(1)
        c_n = c_n.squeeze(1) if c_n is not None else None
    else:
        output = layer_in.transpose(0, 1) if module.batch_first else layer_in
    return (output, (h_n, c_n) if cell == "lstm" else h_n), lanes


def _initial_states(module, cell, hx, B, H, reference, unbatched, sorted_indices):
    """h0 (and c0) as (layers·directions, B, H), in the sorted row order of a packed input."""
    count = lane_count(module)
    if hx is None:
        zeros = reference.new_zeros((count, B, H))
        return zeros, (zeros if cell == "lstm" else None)
    h0, c0 = hx if cell == "lstm" else (hx, None)
    if unbatched:
        h0, c0 = h0.unsqueeze(1), (c0.unsqueeze(1) if c0 is not None else None)
    for given in (h0, c0):
        if given is not None and tuple(given.shape) != (count, B, H):  # as the fused module refuses it
            raise RuntimeError(f"Expected hidden size {(count, B, H)}, got {list(given.shape)}")
    if sorted_indices is not None:
        h0 = h0.index_select(1, sorted_indices)
        c0 = c0.index_select(1, sorted_indices) if c0 is not None else None
    return h0, c0


def _padded(data: Tensor, sizes: list[int], B: int) -> Tensor:
    """Packed data (sum of sizes, F) as a time-major (T, B, F) tensor, zeros past each row's end."""
    return torch.stack([F.pad(chunk, (0, 0, 0, B - chunk.shape[0])) for chunk in data.split(sizes)])


def _direction(module, cell, x, layer, direction, h, c, active, lengths, keep_gates):
    """Run one layer in one direction over time-major `x`; rows past their end keep their state (a packed
    input's shorter sequences), so each row's last state is its own final one."""
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    W_ih, W_hh = getattr(module, "weight_ih" + suffix), getattr(module, "weight_hh" + suffix)
    G = GATE_BLOCKS[cell]
    H = W_hh.shape[1]
    if module.bias:
        b_ih, b_hh = getattr(module, "bias_ih" + suffix), getattr(module, "bias_hh" + suffix)
    else:
        b_ih = b_hh = W_hh.new_zeros(G * H)
    # The LSTM and vanilla cells add b_hh outside any gate, so it joins the input part; the GRU's b_hn sits
    # inside r·(W_hn h + b_hn) and stays in the loop.
    xw = torch.addmm(b_ih if cell == "gru" else b_ih + b_hh, x.flatten(0, 1), W_ih.T).view(x.shape[0], x.shape[1], -1)
    xs = xw.unbind(0)
    W_hh_T = W_hh.T
    act = NONLINEARITIES[activation_of(module)]
    T = len(xs)
    order = range(T - 1, -1, -1) if direction else range(T)
    hs: list[Tensor] = []
    gates: dict[str, list[Tensor]] = {name: [] for name in GATE_NAMES[cell]}
    for t in order:
        if cell == "lstm":
            h_t, c_t, g = lstm_step(xs[t], h, c, W_hh_T)
        elif cell == "gru":
            h_t, g = gru_step(xs[t][:, :2 * H], xs[t][:, 2 * H:], h, W_hh_T, b_hh)
        else:
            h_t, g = rnn_step(xs[t], h, W_hh_T, act)
        if active is not None:
            on = active[t].unsqueeze(1)
            h_t = torch.where(on, h_t, h)
            if cell == "lstm":
                c_t = torch.where(on, c_t, c)
        h = h_t
        if cell == "lstm":
            c = c_t
        hs.append(h)
        if keep_gates:
            for name, value in g.items():
                gates[name].append(value)
    out = torch.stack(hs[::-1] if direction else hs)  # (T, B, H) in input positions
    offsets = None
    if lengths is not None:
        offsets = (T - lengths) if direction else torch.zeros_like(lengths)
    lane = Lane(layer, direction, hs, gates if keep_gates else {}, offsets, lengths)
    return lane, out, h, (c if cell == "lstm" else None)
