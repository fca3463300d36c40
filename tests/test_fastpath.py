"""The fused fast path against the written-out cells: same loss, same gradients, same recorded numbers."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diagnostics import fastpath
from diagnostics import rundata as rd
from diagnostics.config import RunConfig
from diagnostics.model import build
from diagnostics.train import train

ROOT = Path(__file__).resolve().parent.parent
FUSED_CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
TASKS = {"tokens": "agreement", "float": "adding"}  # one-hot token ids and float inputs reach the kernel apart


def loss_and_grads(model, task, inputs, targets, recorded):
    model.zero_grad(set_to_none=True)
    outputs, trace = fastpath.forward(model, inputs, recorded)
    loss = task.loss(outputs, targets)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}, trace


@pytest.mark.parametrize("inputs_kind", TASKS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell,activation", FUSED_CELLS, ids=[f"{c}-{a}" for c, a in FUSED_CELLS])
def test_fused_step_matches_unrolled(cell, activation, layers, inputs_kind):
    config = RunConfig(cell=cell, activation=activation, num_layers=layers, task=TASKS[inputs_kind],
                       hidden_size=8, seq_len=7, seed=3)
    model, task = build(config)
    inputs, targets = task.sample(6, torch.Generator().manual_seed(11))
    fused_loss, fused, trace = loss_and_grads(model, task, inputs, targets, recorded=False)
    assert trace is None  # the fused kernel ran
    loss, unrolled, trace = loss_and_grads(model, task, inputs, targets, recorded=True)
    assert [len(hiddens) for hiddens in trace.hiddens] == [task.total_steps()] * layers  # every step unrolled
    assert fused_loss == pytest.approx(loss, abs=1e-5)
    assert fused.keys() == unrolled.keys()
    for name in unrolled:  # every parameter, the readout included, gets its gradient from the fused kernel
        assert torch.allclose(fused[name], unrolled[name], atol=1e-5), name


@pytest.mark.parametrize("activation", ["sigmoid", "linear"])
def test_rnns_without_a_kernel_always_unroll(activation):
    assert fastpath.kernel("rnn", activation) is None
    model, task = build(RunConfig(activation=activation, hidden_size=8, seq_len=5))
    inputs, _ = task.sample(4, torch.Generator().manual_seed(0))
    _, trace = fastpath.forward(model, inputs, recorded=False)
    assert trace is not None and len(trace.hiddens[0]) == task.total_steps()


def test_unrolled_only_is_scoped():
    model, _ = build(RunConfig(cell="lstm", hidden_size=8, seq_len=5))
    assert fastpath.is_fast(model.rnn)
    with fastpath.unrolled_only():
        assert not fastpath.is_fast(model.rnn)
    assert fastpath.is_fast(model.rnn)


def _close(fast: np.ndarray, slow: np.ndarray) -> None:
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("cell,layers", [("rnn", 1), ("lstm", 2), ("gru", 1)], ids=["rnn-1", "lstm-2", "gru-1"])
def test_training_records_the_same_numbers_with_and_without_the_fast_path(cell, layers):
    config = RunConfig(cell=cell, num_layers=layers, hidden_size=8, batch_size=8, seq_len=6, steps=7,
                       record_every=3, clip="norm", seed=5)
    fast_summary, fast = train(config)
    with fastpath.unrolled_only():
        slow_summary, slow = train(config)
    keys = ["step", "name", "layer", "tensor"]
    fm, sm = (d.metrics[d.metrics.name != rd.STEP_SECONDS].sort_values(keys) for d in (fast, slow))
    assert fm[keys].astype(str).values.tolist() == sm[keys].astype(str).values.tolist()
    _close(fm.value.to_numpy(), sm.value.to_numpy())  # the cheap scalars of every step, fused or not
    assert sorted(fast.time_grads.step.unique()) == [1, 3, 6]  # recorded steps only
    _close(fast.time_grads.value.to_numpy(), slow.time_grads.value.to_numpy())
    if cell != "rnn":
        for column in ("mean", "frac_low", "frac_high"):
            _close(fast.gates[column].to_numpy(), slow.gates[column].to_numpy())
    assert fast_summary.final_metric == pytest.approx(slow_summary.final_metric, abs=1e-5)


def test_a_nonfinite_fused_step_is_replayed_to_find_the_hidden_state():
    """Step 2 is unrecorded, so it runs fused and keeps no h_t; the ledger must still name the time step."""
    config = RunConfig(activation="relu", init="normal", init_scale=3.0, clip="none", lr=1.0, seq_len=30,
                       hidden_size=16, batch_size=16, steps=20, record_every=1000)
    fast, fast_data = train(config)
    with fastpath.unrolled_only():
        slow, slow_data = train(config)
    assert fast.status == "diverged" and fast.first_nonfinite["step"] == 2
    assert fast.first_nonfinite["tensor"] == "hidden" and fast.first_nonfinite["time_step"] is not None
    assert fast.first_nonfinite == slow.first_nonfinite
    assert fast_data.events.equals(slow_data.events)


def test_bench_quick_writes_every_case(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert {f"P{i}" for i in range(1, 8)} <= set(report)
    for key in (f"P{i}" for i in range(1, 8)):
        assert report[key]["results"], key
        for row in report[key]["results"]:
            if key == "P6":  # memory growth in MB: any finite number (it can be 0 or below after warm-up)
                assert isinstance(row["growth_mb"], float) and math.isfinite(row["growth_mb"]), row
            else:  # a ratio of two measured times
                assert isinstance(row["ratio"], float) and row["ratio"] > 0, (key, row)
    assert "P1" in done.stdout and "ratio" in done.stdout
    d1 = report["D1"]  # the quick corpus: one run that diverges, one that forgets, one that learns
    assert sorted(r["label"] for r in d1["results"]) == ["did not learn", "diverged", "learned"]
    assert {kind: (s["precision"], s["recall"]) for kind, s in d1["score"].items()} == {
        "exploding": (1.0, 1.0), "vanishing": (1.0, 1.0)}
    assert "D1 exploding  precision 1.00  recall 1.00" in done.stdout
    b1 = report["B1"]  # the step budget against measured steps: positive ratios, the worst of them named
    assert b1["results"] and all(r["ratio"] > 0 and r["bytes_ratio"] > 0 for r in b1["results"])
    assert b1["worst_time_ratio"] == pytest.approx(max(max(r["ratio"], 1 / r["ratio"]) for r in b1["results"]),
                                                   abs=0.01)
    [p8] = report["P8"]["results"]  # two browser viewers of one live run on a real server
    assert p8["viewers"] == 2 and 0 < p8["first_chart_median_s"] <= p8["first_chart_max_s"]
    assert p8["server_cpu_per_s"] > 0 and "P8: server CPU" in done.stdout
    assert p8["run_steps_per_s"] > 0  # measured while the run still trained
    m1 = report["M1"]  # a 30-step LSTM at T=200 recorded every step, its verdict and export both ways
    assert m1["rows"]["time_grads"] == 30 * 200 and m1["rows"]["gates"] == 30 * 4 * 200
    assert m1["same_verdict"] and set(m1["sides"]) == {"verdict-streamed", "verdict-whole", "export-streamed",
                                                        "export-whole"}
    assert all(s["seconds"] > 0 for s in m1["sides"].values()) and "M1: peak memory" in done.stdout
    [l1] = report["L1"]["results"]  # lesson 1 in Chromium: its four paced steps seen one by one
    assert l1["lesson"] == "exploding-nan 0" and 0 < l1["first_chart_s"] and l1["updates"] >= 1
    p9 = report["P9"]["results"]  # the peers are not installed with the product: watch alone
    assert set(p9) == {"watch"} and p9["watch"]["ratio"] > 0
