"""PyTorch's fused RNN kernels run on the lab's own parameters, for the training steps that record nothing per
time step.

`RecurrentNet` registers its parameters with the names, shapes and order of `nn.RNN/LSTM/GRU`'s flat weights
(w_ih, w_hh, b_ih, b_hh per layer), so the kernels behind those modules compute the same function and autograd
puts their gradients straight into our parameters' `.grad`. A step between `record_every` steps reads only the
loss and the gradients, so it can skip the Python loop; recorded steps (and the replay of a non-finite step) stay
unrolled, where every h_t and gate is a tensor.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, _VF

from .cells import RecurrentNet, Trace
from .model import RecurrentModel

# The fused kernels exist for tanh and ReLU RNNs, LSTMs and GRUs only; sigmoid and linear RNNs always unroll.
_KERNELS: dict[tuple[str, str], Callable] = {
    ("rnn", "tanh"): _VF.rnn_tanh, ("rnn", "relu"): _VF.rnn_relu, ("lstm", "tanh"): _VF.lstm, ("gru", "tanh"): _VF.gru,
}
# Per thread (and asyncio task), so a benchmark's reference run does not switch off another thread's fast path.
_UNROLLED_ONLY = contextvars.ContextVar("unrolled_only", default=False)


def kernel(cell: str, activation: str) -> Callable | None:
    """The fused kernel that computes this cell exactly, or None when there is none."""
    # Gated cells ignore `activation` (they always use sigmoid gates and tanh).
    return _KERNELS.get((cell, activation if cell == "rnn" else "tanh"))


def is_fast(net: RecurrentNet) -> bool:
    """Whether an unrecorded step of this net runs fused (in the current thread)."""
    return not _UNROLLED_ONLY.get() and kernel(net.cell, net.activation) is not None


@contextmanager
def unrolled_only() -> Iterator[None]:
    """Train with the written-out loop on every step: the reference that benchmarks and tests compare against."""
    token = _UNROLLED_ONLY.set(True)
    try:
        yield
    finally:
        _UNROLLED_ONLY.reset(token)


def fused_outputs(net: RecurrentNet, x: Tensor) -> Tensor:
    """The last layer's hidden states (B, T, H) from the fused kernel, starting from zero states."""
    run = kernel(net.cell, net.activation)
    weights = [p for k in range(net.num_layers) for p in net.layer_params(k)]
    if x.dtype == torch.long:
        # The kernel takes dense inputs. One-hot rows cost one (B·T, V)·(V, G·H) matmul inside the kernel, small
        # next to the recurrence for these vocabularies (tens of tokens), and leave W_ih's gradient to the kernel
        # itself; feeding precomputed projections instead would need a (G·H)² identity matmul per time step.
        x = F.one_hot(x, net.input_size).to(weights[0].dtype)
    h0 = x.new_zeros((net.num_layers, x.shape[0], net.hidden_size))
    hx = (h0, h0) if net.cell == "lstm" else h0
    # Arguments as nn.RNN passes them: has_biases, num_layers, dropout, train, bidirectional, batch_first.
    return run(x, hx, weights, True, net.num_layers, 0.0, torch.is_grad_enabled(), False, True)[0]


def forward(model: RecurrentModel, inputs: Tensor, recorded: bool) -> tuple[Tensor, Trace | None]:
    """A training step's outputs: unrolled with its trace when the step is recorded or no kernel fits, else fused
    with no trace (a caller that needs hidden states then replays the step unrolled)."""
    if recorded or not is_fast(model.rnn):
        return model(inputs, keep_gates=recorded)
    hiddens = fused_outputs(model.rnn, inputs)
    # The same readout as RecurrentModel.forward.
    return model.readout(hiddens[:, -1] if model.task.last_step_only else hiddens), None
