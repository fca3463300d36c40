"""The written-out cells against PyTorch's fused modules as oracles (weights copied both ways)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diagnostics.cells import GATE_NAMES, RecurrentNet

CASES = [
    ("rnn", "tanh", 1), ("rnn", "tanh", 2), ("rnn", "relu", 1), ("rnn", "relu", 2),
    ("lstm", "tanh", 1), ("lstm", "tanh", 2), ("gru", "tanh", 1), ("gru", "tanh", 2),
]
IDS = [f"{c}-{a}-{n}layer" for c, a, n in CASES]


def oracle(cell, activation, input_size, hidden, layers):
    if cell == "rnn":
        return nn.RNN(input_size, hidden, layers, nonlinearity=activation, batch_first=True)
    return {"lstm": nn.LSTM, "gru": nn.GRU}[cell](input_size, hidden, layers, batch_first=True)


def copy_params(src, dst):
    with torch.no_grad():
        for name, p in src.named_parameters():
            getattr(dst, name).copy_(p)


@pytest.mark.parametrize("cell,activation,layers", CASES, ids=IDS)
def test_outputs_and_gradients_match_pytorch(cell, activation, layers):
    torch.manual_seed(0)
    ref = oracle(cell, activation, 5, 8, layers)
    ours = RecurrentNet(cell, 5, 8, layers, activation)
    copy_params(ref, ours)
    x = torch.randn(3, 7, 5)
    weights = torch.randn(3, 7, 8)  # weights every output so each time step's gradient matters

    ref_out, _ = ref(x)
    trace = ours(x)
    assert torch.allclose(trace.outputs, ref_out, atol=1e-5)

    (ref_out * weights).sum().backward()
    (trace.outputs * weights).sum().backward()
    for name, p in ref.named_parameters():
        assert torch.allclose(getattr(ours, name).grad, p.grad, atol=1e-5), name


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_weights_copy_back_into_pytorch(cell):
    torch.manual_seed(1)
    ours = RecurrentNet(cell, 4, 6, 2)
    ref = oracle(cell, "tanh", 4, 6, 2)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(getattr(ours, name))
    x = torch.randn(2, 5, 4)
    assert torch.allclose(ours(x).outputs, ref(x)[0], atol=1e-5)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_token_ids_equal_one_hot_inputs(cell):
    torch.manual_seed(2)
    net = RecurrentNet(cell, 10, 6, 2)
    tokens = torch.randint(0, 10, (3, 9))
    by_ids = net(tokens).outputs
    by_one_hot = net(F.one_hot(tokens, 10).float()).outputs
    assert torch.allclose(by_ids, by_one_hot, atol=1e-6)


@pytest.mark.parametrize("activation,fn", [
    ("sigmoid", torch.sigmoid), ("linear", lambda a: a), ("tanh", torch.tanh), ("relu", torch.relu),
], ids=["sigmoid", "linear", "tanh", "relu"])
def test_vanilla_rnn_follows_its_equation(activation, fn):
    torch.manual_seed(3)
    net = RecurrentNet("rnn", 3, 4, 1, activation)
    x = torch.randn(2, 6, 3)
    h = torch.zeros(2, 4)
    for t in range(6):
        h = fn(x[:, t] @ net.weight_ih_l0.T + net.bias_ih_l0 + h @ net.weight_hh_l0.T + net.bias_hh_l0)
        assert torch.allclose(net(x).hiddens[0][t], h, atol=1e-6)


def test_lstm_gates_explain_the_cell_state():
    torch.manual_seed(4)
    net = RecurrentNet("lstm", 3, 5, 1)
    trace = net(torch.randn(2, 6, 3))
    g = trace.gates[0]
    assert tuple(g) == GATE_NAMES["lstm"]
    c_prev = torch.zeros(2, 5)
    for t in range(6):
        c_t = g["forget"][t] * c_prev + g["input"][t] * g["candidate"][t]
        assert torch.allclose(trace.cells[0][t], c_t, atol=1e-6)
        assert torch.allclose(trace.hiddens[0][t], g["output"][t] * torch.tanh(c_t), atol=1e-6)
        c_prev = c_t


def test_gru_update_gate_interpolates_hidden_state():
    torch.manual_seed(5)
    net = RecurrentNet("gru", 3, 5, 1)
    trace = net(torch.randn(2, 4, 3))
    g = trace.gates[0]
    h_prev = torch.zeros(2, 5)
    for t in range(4):
        expected = (1 - g["update"][t]) * g["candidate"][t] + g["update"][t] * h_prev
        assert torch.allclose(trace.hiddens[0][t], expected, atol=1e-6)
        h_prev = trace.hiddens[0][t]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_hidden_states_are_graph_nodes_with_exact_gradients(cell):
    torch.manual_seed(6)
    net = RecurrentNet(cell, 3, 4, 2)
    x = torch.randn(2, 5, 3)

    def last_step_loss(trace):  # loss at the last step only, as in the agreement task
        return trace.outputs[:, -1].pow(2).sum()

    oracle_trace = net(x)  # a separate pass, so autograd.grad cannot touch the retained .grad below
    flat = [h for layer in oracle_trace.hiddens for h in layer]
    expected = torch.autograd.grad(last_step_loss(oracle_trace), flat)

    trace = net(x)
    for layer in trace.hiddens:
        for h in layer:
            h.retain_grad()
    last_step_loss(trace).backward()
    for h, g in zip([h for layer in trace.hiddens for h in layer], expected):
        assert torch.allclose(h.grad, g, atol=1e-7)
    # earlier time steps receive gradient only through the recurrence: nonzero, unlike a fused output
    assert trace.hiddens[0][0].grad.abs().sum() > 0


def test_unknown_cell_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: rnn, lstm, gru"):
        RecurrentNet("transformer", 3, 4)
