"""The training loop and its recording, checked against independent computations of the same step."""

import math
import threading

import pytest
import torch

from diagnostics import rundata as rd
from diagnostics.config import RunConfig
from diagnostics.model import build
from diagnostics.heldout import EVAL_BATCH, EVAL_SEED_OFFSET
from diagnostics.train import finish_diagnosis, l2_penalty, train

SMALL = dict(hidden_size=8, batch_size=16, seq_len=6, steps=3, record_every=1)


def first_step(config: RunConfig):
    """Replay step 1 of `train` by hand: same model, same first batch."""
    model, task = build(config)
    inputs, targets = task.sample(config.batch_size, torch.Generator().manual_seed(config.seed))
    outputs, trace = model(inputs)
    return model, task, trace, task.loss(outputs, targets)


def recorded(data, name, step=1, tensor="", layer=None):
    return data.series(name, layer=layer, tensor=tensor).loc[step]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradient_and_weight_norms_match_vector_norm(cell):
    config = RunConfig(cell=cell, num_layers=2, clip="none", lr=0.05, momentum=0.0, **SMALL)
    _, data = train(config)
    model, _, _, loss = first_step(config)
    loss.backward()
    layer_sq = {}
    for name, p in model.named_parameters():
        layer = int(name[-1]) if name.startswith("rnn.") else None
        expected = torch.linalg.vector_norm(p.grad).item()
        assert recorded(data, rd.GRAD_NORM, tensor=name, layer=layer) == pytest.approx(expected, rel=1e-5)
        # plain SGD: w1 = w0 - lr * g, so the recorded weight norm after step 1 is computable here
        w1 = p.detach() - 0.05 * p.grad
        assert recorded(data, rd.WEIGHT_NORM, tensor=name, layer=layer) == pytest.approx(
            torch.linalg.vector_norm(w1).item(), rel=1e-5)
        assert recorded(data, rd.UPDATE_RATIO, tensor=name, layer=layer) == pytest.approx(
            (0.05 * torch.linalg.vector_norm(p.grad) / torch.linalg.vector_norm(p.detach())).item(), rel=1e-4)
        if layer is not None:
            layer_sq[layer] = layer_sq.get(layer, 0.0) + expected ** 2
    for layer, sq in layer_sq.items():
        assert recorded(data, rd.GRAD_NORM, layer=layer) == pytest.approx(math.sqrt(sq), rel=1e-5)


@pytest.mark.parametrize("cell,layers", [("rnn", 1), ("lstm", 2), ("gru", 2)], ids=["rnn-1", "lstm-2", "gru-2"])
def test_time_gradients_match_autograd_grad(cell, layers):
    config = RunConfig(cell=cell, num_layers=layers, **SMALL)
    _, data = train(config)
    _, _, trace, loss = first_step(config)
    flat = [h for layer in trace.hiddens for h in layer]
    grads = torch.autograd.grad(loss, flat)
    T = len(trace.hiddens[0])
    tg = data.time_grads[data.time_grads.step == 1]
    assert len(tg) == layers * T
    for i, g in enumerate(grads):
        k, t = divmod(i, T)
        value = tg[(tg.layer == k) & (tg.t == t + 1)].value.item()
        assert value == pytest.approx(torch.linalg.vector_norm(g).item(), rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("a", [0.5, 0.9, 1.2], ids=["a0.5", "a0.9", "a1.2"])
def test_linear_rnn_time_gradient_follows_a_to_the_t(a):
    """With h_t = a·h_{t-1} + W_ih x_t and the loss at step T, ∂L/∂h_t = a^(T-t) ∂L/∂h_T exactly."""
    config = RunConfig(activation="linear", init="identity", init_scale=a, **SMALL)
    summary, data = train(config)
    profile = data.time_grads[(data.time_grads.step == 1) & (data.time_grads.layer == 0)].value.to_numpy()
    T = config.seq_len + 2
    assert len(profile) == T
    assert profile[0] / profile[-1] == pytest.approx(a ** (T - 1), rel=1e-4)
    for t in range(T - 1):
        assert profile[t] / profile[t + 1] == pytest.approx(a, rel=1e-4)


def test_float32_underflow_is_recorded_as_exact_zero():
    config = RunConfig(activation="linear", init="identity", init_scale=1e-3, seq_len=40, hidden_size=8,
                       batch_size=4, steps=1, record_every=1)
    summary, data = train(config)
    profile = data.time_grads[data.time_grads.layer == 0].sort_values("t").value.to_numpy()
    assert profile[-1] > 0 and profile[0] == 0.0  # 1e-3^41 is far below float32's smallest normal
    assert summary.time_grad_ratio == 0.0


@pytest.mark.parametrize("threshold", [1e-3, 1e3], ids=["fires", "silent"])
def test_norm_clipping_records_what_clip_grad_norm_returns(threshold):
    config = RunConfig(clip="norm", clip_threshold=threshold, **SMALL)
    _, data = train(config)
    model, _, _, loss = first_step(config)
    loss.backward()
    pre = torch.nn.utils.clip_grad_norm_(model.parameters(), threshold).item()
    post = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
    assert recorded(data, rd.GRAD_NORM_PRE_CLIP) == pytest.approx(pre, rel=1e-5)
    assert recorded(data, rd.GRAD_NORM_POST_CLIP) == pytest.approx(post, rel=1e-5)
    assert recorded(data, rd.CLIP_FIRED) == float(pre > threshold)


def test_value_clipping_bounds_every_gradient_entry():
    config = RunConfig(clip="value", clip_threshold=1e-3, **SMALL)
    _, data = train(config)
    model, _, _, loss = first_step(config)
    loss.backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), 1e-3)
    post = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
    assert recorded(data, rd.GRAD_NORM_POST_CLIP) == pytest.approx(post, rel=1e-5)
    assert recorded(data, rd.CLIP_FIRED) == 1.0


def test_penalty_is_recorded_apart_from_the_loss():
    config = RunConfig(weight_decay=0.01, **SMALL)
    _, data = train(config)
    model, _, _, loss = first_step(config)
    expected = 0.005 * sum(p.pow(2).sum() for n, p in model.named_parameters() if "weight" in n)
    assert recorded(data, rd.PENALTY) == pytest.approx(expected.item(), rel=1e-5)
    assert recorded(data, rd.LOSS) == pytest.approx(loss.item(), rel=1e-5)
    assert l2_penalty(model, 0.0).item() == 0.0


def test_lstm_gate_means_match_the_trace():
    config = RunConfig(cell="lstm", **SMALL)
    _, data = train(config)
    _, _, trace, _ = first_step(config)
    gates = data.gates[data.gates.step == 1]
    assert set(gates.gate) == {"input", "forget", "candidate", "output"}
    for t in (1, 4, 8):
        forget = trace.gates[0]["forget"][t - 1]
        row = gates[(gates.gate == "forget") & (gates.t == t)].iloc[0]
        assert row["mean"] == pytest.approx(forget.mean().item(), rel=1e-5)
        assert row.frac_high == pytest.approx((forget > 0.9).float().mean().item(), abs=1e-7)


def test_spectra_of_the_recurrent_matrix():
    config = RunConfig(init="orthogonal", init_scale=1.5, lr=1e-7, **SMALL)
    _, data = train(config)
    model, _, _, _ = first_step(config)
    W = model.rnn.weight_hh_l0.detach()
    assert recorded(data, rd.SIGMA_MAX, tensor="rnn.weight_hh_l0", layer=0) == pytest.approx(
        torch.linalg.svdvals(W)[0].item(), rel=1e-4)
    assert recorded(data, rd.SPECTRAL_RADIUS, tensor="rnn.weight_hh_l0", layer=0) == pytest.approx(1.5, rel=1e-4)


def test_dead_relu_units_count_as_saturated():
    config = RunConfig(activation="relu", **SMALL)
    model, _, trace, _ = first_step(config)
    hs = torch.stack(trace.hiddens[0])
    expected = (hs.flatten(0, 1) <= 0).all(dim=0).float().mean().item()
    _, data = train(config)
    assert recorded(data, rd.HIDDEN_SATURATION, layer=0) == pytest.approx(expected)


def test_same_config_same_numbers():
    config = RunConfig(cell="gru", steps=5, hidden_size=8, batch_size=8, record_every=2)
    a, da = train(config)
    b, db = train(config)
    drop = da.metrics.name != rd.STEP_SECONDS
    assert da.metrics[drop].equals(db.metrics[db.metrics.name != rd.STEP_SECONDS])
    assert da.time_grads.equals(db.time_grads) and da.gates.equals(db.gates)
    assert (a.final_loss, a.final_metric) == (b.final_loss, b.final_metric)


EXPLODE = dict(activation="relu", init="normal", init_scale=3.0, clip="none", lr=1.0, seq_len=30,
               hidden_size=16, batch_size=16, steps=20, record_every=5)


def test_forced_divergence_stops_and_locates_the_first_nonfinite():
    summary, data = train(RunConfig(**EXPLODE))
    assert summary.status == "diverged"
    step = summary.first_nonfinite["step"]
    assert summary.steps_done == step and step > 1
    assert summary.first_nonfinite["tensor"] == "hidden" and summary.first_nonfinite["layer"] == 0
    t = summary.first_nonfinite["time_step"]
    assert 1 < t <= 32
    first = data.events[data.events.step == step].iloc[0]
    assert (first.tensor, first.layer, first.time_step) == ("hidden", 0, t)
    assert first.posinf + first.nan > 0
    # nothing recorded before is lost: every step up to the divergence has its loss
    assert list(data.series(rd.LOSS).index) == list(range(1, step + 1))
    assert math.isfinite(data.series(rd.LOSS).loc[step - 1])


def test_a_gradient_norm_that_overflows_float32_is_located():
    # A linear RNN with σ_max 1.3 and no clipping: by step 4 the gradient entries are ~1e22, finite in float32,
    # but their squares pass 3.4e38, so every gradient norm is +Inf while no tensor holds a NaN or an Inf.
    config = RunConfig(activation="linear", init="orthogonal", init_scale=1.3, clip="none", seed=2, steps=10)
    summary, data = train(config)
    assert summary.status == "diverged" and summary.steps_done == 4
    assert summary.first_nonfinite == {"step": 4, "tensor": "grad_norm:rnn.weight_ih_l0", "layer": 0,
                                       "time_step": None}
    events = data.events[data.events.step == 4]
    assert set(events.tensor) == {f"grad_norm:{name}" for name in
                                  ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
                                   "readout.weight")}  # readout.bias' gradient stays small
    assert (events.posinf == 1).all() and (events.nan == 0).all()
    assert math.isfinite(data.series(rd.LOSS).loc[4])
    finish_diagnosis(summary, data, config)
    nonfinite = next(d for d in summary.diagnoses if d["rule"] == "nonfinite")
    assert "gradient norm of rnn.weight_ih_l0 (finite entries whose squares overflowed float32)" in nonfinite["message"]


def test_skip_policy_goes_on_after_nonfinite_steps():
    summary, data = train(RunConfig(**{**EXPLODE, "on_nonfinite": "skip"}))
    assert summary.status == "completed" and summary.steps_done == 20
    skipped = data.events[data.events.kind == rd.EVENT_SKIPPED_STEP]
    assert summary.skipped_steps == len(skipped) > 0
    assert summary.first_nonfinite["step"] == skipped.step.min()


def test_stop_event_ends_the_run_cleanly():
    stop = threading.Event()

    def on_step(summary):
        if summary.steps_done == 4:
            stop.set()

    summary, data = train(RunConfig(steps=50, **{k: v for k, v in SMALL.items() if k != "steps"}),
                          stop=stop, on_step=on_step)
    assert summary.status == "stopped" and summary.steps_done == 4
    assert data.series(rd.LOSS).index.max() == 4


def test_record_every_zero_records_only_cheap_scalars():
    _, data = train(RunConfig(**{**SMALL, "record_every": 0}))
    assert data.time_grads.empty and data.gates.empty
    assert len(data.series(rd.LOSS)) == 3


def test_stored_run_keeps_its_trained_weights(tmp_path):
    from diagnostics.runner import load_trained_model, run_into_store
    from diagnostics.store import Store

    store = Store(tmp_path / "runs.sqlite")
    config = RunConfig(cell="lstm", **SMALL)
    summary = run_into_store(config, store)
    model, step = load_trained_model(store, summary.run_id)
    assert step == 3
    inputs, targets = model.task.sample(EVAL_BATCH, torch.Generator().manual_seed(config.seed + EVAL_SEED_OFFSET))
    with torch.no_grad():
        accuracy = model.task.metric(model(inputs)[0], targets).item()
    assert accuracy == pytest.approx(summary.final_metric)  # same weights, same held-out batch
