"""The written-out twin against PyTorch's fused modules: outputs, final states and every gradient (parameters,
inputs, initial states) within 1e-5 for each supported variant, packed and bidirectional included; dropout draws
the same masks; what is not supported is refused with the reason."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from diagnostics.twin import refusal, twin_forward

TOL = dict(atol=1e-5, rtol=1e-5)
IN, H, B, T = 5, 7, 4, 9
LENGTHS = [9, 3, 6, 1]  # unsorted on purpose: packing sorts, the twin must unsort


def module_of(cell, **kw):
    torch.manual_seed(0)
    kind = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    return kind(IN, H, **kw)


def inputs(module, variant):
    """(input, hx) of one variant, all leaves that require grad."""
    g = torch.Generator().manual_seed(1)
    directions = 2 if module.bidirectional else 1
    shape = (B, T, IN) if module.batch_first else (T, B, IN)
    if variant == "unbatched":
        shape = (T, IN)
    x = torch.randn(shape, generator=g, requires_grad=True)
    hx = None
    if variant in ("h0", "packed-h0", "unbatched"):
        hshape = (module.num_layers * directions, H) if variant == "unbatched" else (module.num_layers * directions,
                                                                                   B, H)
        h0 = torch.randn(hshape, generator=g, requires_grad=True)
        hx = (h0, torch.randn(hshape, generator=g, requires_grad=True)) if isinstance(module, nn.LSTM) else h0
    if variant.startswith("packed"):
        x = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=module.batch_first, enforce_sorted=False)
    return x, hx


def leaves(x, hx):
    out = [x] if not isinstance(x, PackedSequence) else []
    if hx is not None:
        out += list(hx) if isinstance(hx, tuple) else [hx]
    return out


def scalar(output, hidden):
    """A loss that reads every output position and the final states, with unequal weights."""
    data = output.data if isinstance(output, PackedSequence) else output
    states = list(hidden) if isinstance(hidden, tuple) else [hidden]
    w = torch.linspace(0.5, 1.5, data.numel()).view_as(data)
    return (data * w).sum() + sum((s ** 2).sum() for s in states)


def grads(module, x, hx, fn):
    packed_leaf = None
    if isinstance(x, PackedSequence):  # the packed data as a leaf, so its gradient is compared too
        packed_leaf = x.data.detach().requires_grad_()
        x = PackedSequence(packed_leaf, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    output, hidden = fn(module, x, hx)
    module.zero_grad()
    targets = leaves(x, hx) + ([packed_leaf] if packed_leaf is not None else [])
    for t in targets:
        t.grad = None
    scalar(output, hidden).backward()
    found = {name: p.grad.clone() for name, p in module.named_parameters()}
    found.update({f"leaf{i}": t.grad.clone() for i, t in enumerate(targets)})
    return output, hidden, found


def fused(module, x, hx):
    return module(x, hx)


def written_out(module, x, hx):
    return twin_forward(module, x, hx)[0]


VARIANTS = {
    "rnn-tanh": ("rnn", {}, "plain"), "rnn-relu": ("rnn", {"nonlinearity": "relu"}, "plain"),
    "rnn-2-layers-bidirectional": ("rnn", {"num_layers": 2, "bidirectional": True}, "h0"),
    "rnn-packed": ("rnn", {"num_layers": 2}, "packed"),
    "lstm": ("lstm", {}, "plain"), "lstm-batch-first": ("lstm", {"batch_first": True}, "h0"),
    "lstm-3-layers": ("lstm", {"num_layers": 3}, "h0"),
    "lstm-2-layers-bidirectional-batch-first": ("lstm", {"num_layers": 2, "bidirectional": True,
                                                          "batch_first": True}, "plain"),
    "lstm-packed-bidirectional": ("lstm", {"num_layers": 2, "bidirectional": True}, "packed-h0"),
    "lstm-packed-batch-first": ("lstm", {"batch_first": True}, "packed"),
    "lstm-no-bias": ("lstm", {"bias": False, "num_layers": 2}, "plain"),
    "lstm-unbatched-bidirectional": ("lstm", {"bidirectional": True}, "unbatched"),
    "gru": ("gru", {}, "plain"), "gru-2-layers-bidirectional": ("gru", {"num_layers": 2, "bidirectional": True}, "h0"),
    "gru-packed-bidirectional-batch-first": ("gru", {"bidirectional": True, "batch_first": True}, "packed-h0"),
    "gru-no-bias": ("gru", {"bias": False}, "h0"),
}


@pytest.mark.parametrize("cell,kw,variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_twin_computes_what_the_module_computes(cell, kw, variant):
    module = module_of(cell, **kw)
    x, hx = inputs(module, variant)
    out_f, hid_f, g_f = grads(module, x, hx, fused)
    out_t, hid_t, g_t = grads(module, x, hx, written_out)
    if isinstance(out_f, PackedSequence):
        assert isinstance(out_t, PackedSequence)
        assert torch.equal(out_f.batch_sizes, out_t.batch_sizes)
        assert torch.equal(out_f.sorted_indices, out_t.sorted_indices)
        out_f, out_t = out_f.data, out_t.data
    torch.testing.assert_close(out_t, out_f, **TOL)
    for a, b in zip(hid_t if isinstance(hid_t, tuple) else [hid_t], hid_f if isinstance(hid_f, tuple) else [hid_f]):
        torch.testing.assert_close(a, b, **TOL)
    assert g_t.keys() == g_f.keys()
    for name in g_f:
        torch.testing.assert_close(g_t[name], g_f[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")


def test_lanes_are_in_each_directions_processing_order():
    """The reverse lane's first state is the one after reading the last position; a packed row starts its
    reverse processing where its own sequence ends."""
    module = module_of("gru", bidirectional=True)
    x, _ = inputs(module, "plain")
    (output, h_n), lanes = twin_forward(module, x)
    assert [(lane.layer, lane.direction) for lane in lanes] == [(0, 0), (0, 1)]
    torch.testing.assert_close(lanes[1].hiddens[0], output[T - 1, :, H:], **TOL)
    torch.testing.assert_close(lanes[1].hiddens[-1], h_n[1], **TOL)
    packed, _ = inputs(module, "packed")
    _, lanes = twin_forward(module, packed)
    assert lanes[1].lengths.tolist() == sorted(LENGTHS, reverse=True)
    assert lanes[1].offsets.tolist() == [T - n for n in sorted(LENGTHS, reverse=True)]
    assert lanes[0].offsets.tolist() == [0] * B


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_dropout_between_layers_draws_the_modules_own_masks(cell):
    for variant in ("plain", "packed"):
        module = module_of(cell, num_layers=3, dropout=0.5, bidirectional=True)
        x, hx = inputs(module, variant)
        torch.manual_seed(7)
        module.train()
        out_f = fused(module, x, hx)[0]
        after_fused = torch.get_rng_state()
        torch.manual_seed(7)
        out_t = written_out(module, x, hx)[0]
        a, b = (out_t.data, out_f.data) if variant == "packed" else (out_t, out_f)
        torch.testing.assert_close(a, b, **TOL)
        assert torch.equal(torch.get_rng_state(), after_fused)  # as many numbers drawn: the run goes on alike
        assert not torch.allclose(a, written_out(module.eval(), x, hx)[0].data, **TOL)  # dropout did drop


def test_what_the_twin_cannot_run_is_refused_by_name():
    torch.manual_seed(0)
    assert "proj_size=3" in refusal("encoder.lstm", nn.LSTM(4, 8, proj_size=3))
    assert "encoder.lstm" in refusal("encoder.lstm", nn.LSTM(4, 8, proj_size=3))

    class Peephole(nn.LSTM):
        def forward(self, x, hx=None):
            return super().forward(x, hx)

    assert "Peephole, a subclass of nn.LSTM with its own forward" in refusal("rnn", Peephole(4, 8))

    class Named(nn.GRU):
        pass

    assert refusal("gru", Named(4, 8)) is None and refusal("", nn.RNN(4, 8, nonlinearity="relu")) is None
