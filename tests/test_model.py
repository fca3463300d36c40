"""`build(config)`: the task's model, initialised from the config, seeded."""

import pytest
import torch

from diagnostics.config import RunConfig
from diagnostics.model import build

TASK_SHAPES = [
    ("agreement", 12, (8, 2)),  # last step only: one verb-number prediction per sentence
    ("adding", 12, (8, 1)),
    ("copy", 5, (8, 25, 9)),  # every step: blank or one of 8 symbols
]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("task,seq_len,shape", TASK_SHAPES, ids=[t[0] for t in TASK_SHAPES])
def test_output_shapes_follow_the_task(cell, task, seq_len, shape):
    model, t = build(RunConfig(cell=cell, task=task, seq_len=seq_len, hidden_size=6, num_layers=2))
    inputs, targets = t.sample(8, torch.Generator().manual_seed(0))
    outputs, trace = model(inputs)
    assert outputs.shape == shape
    assert len(trace.hiddens) == 2 and len(trace.hiddens[0]) == t.total_steps()
    assert torch.isfinite(t.loss(outputs, targets))


def test_same_seed_same_weights_other_seed_other_weights():
    a, _ = build(RunConfig(seed=3))
    b, _ = build(RunConfig(seed=3))
    c, _ = build(RunConfig(seed=4))
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), name
        assert not torch.equal(p, r), name


def test_config_initialisation_reaches_the_model():
    model, _ = build(RunConfig(init="identity", init_scale=0.9, hidden_size=5))
    assert torch.allclose(model.rnn.weight_hh_l0, 0.9 * torch.eye(5))
    lstm, _ = build(RunConfig(cell="lstm", init="xavier_uniform", forget_bias=2.0, hidden_size=4))
    assert torch.allclose(lstm.rnn.bias_ih_l0[4:8] + lstm.rnn.bias_hh_l0[4:8], torch.full((4,), 2.0))


def test_parameter_names_follow_pytorch_layout():
    model, _ = build(RunConfig(cell="gru", num_layers=2, hidden_size=3))
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    ref = {f"rnn.{n}": tuple(p.shape) for n, p in torch.nn.GRU(37, 3, 2).named_parameters()}
    assert {k: v for k, v in shapes.items() if k.startswith("rnn.")} == ref
    assert shapes["readout.weight"] == (2, 3)
