"""Each diagnosis rule on crafted recordings: it fires with exact evidence, stays quiet just below its threshold,
and a healthy run fires nothing; remedies are valid config changes and diagnoses are strict JSON."""

import functools
import json
import math

import pytest

from diagnostics import diagnosis as dg
from diagnostics import rundata as rd
from diagnostics.config import RunConfig
from diagnostics.rundata import RunData

STEPS = range(1, 101)
RECORDED = range(10, 101, 10)
T = 20  # time steps in the healthy profile
HEALTHY_GAIN = 0.98


def healthy(config):
    """Rows of a run nobody should worry about: flat weights, grad norms ~0.3, gentle decay over time."""
    rows = {"metrics": [], "time_grads": [], "gates": [], "events": []}
    for step in STEPS:
        rows["metrics"].append((step, rd.GRAD_NORM_PRE_CLIP, None, "", 0.3 + 0.01 * (step % 3)))
        rows["metrics"].append((step, rd.LOSS, None, "", 1.0 / step))
        for k in range(config.num_layers):
            rows["metrics"].append((step, rd.WEIGHT_NORM, k, "", 5.0 + 0.01 * (step % 5)))
            rows["metrics"].append((step, rd.GRAD_NORM, k, "", 0.3 + 0.01 * (step % 4)))
    for step in RECORDED:
        for k in range(config.num_layers):
            rows["metrics"].append((step, rd.HIDDEN_SATURATION, k, "", 0.2))
            rows["metrics"].append((step, rd.SIGMA_MAX, k, f"rnn.weight_hh_l{k}", 1.2))
            rows["time_grads"] += [(step, k, t, HEALTHY_GAIN ** (T - t)) for t in range(1, T + 1)]
            # Forget / update gates near 1 are the memory working; the tanh candidate is never judged.
            gates = {"lstm": {"input": (0.1, 0.1), "forget": (0.0, 0.97), "candidate": (0.5, 0.45),
                              "output": (0.1, 0.2)},
                     "gru": {"reset": (0.1, 0.1), "update": (0.0, 0.95), "candidate": (0.5, 0.45)}}
            for gate, (low, high) in gates.get(config.cell, {}).items():
                rows["gates"] += [(step, k, gate, t, 0.5, low, high) for t in range(1, T + 1)]
    return rows


def put(rows, table, keep, new):
    """Replace the rows of one table that `keep` rejects by `new` ones."""
    rows[table] = [r for r in rows[table] if keep(r)] + list(new)
    return rows


def put_metric(rows, name, layer, values, tensor=""):
    """Set one metric's whole series ({step: value})."""
    return put(rows, "metrics", lambda r: (r[1], r[2], r[3]) != (name, layer, tensor),
               [(step, name, layer, tensor, v) for step, v in values.items()])


def put_profile(rows, step, layer, profile):
    return put(rows, "time_grads", lambda r: (r[0], r[1]) != (step, layer),
               [(step, layer, t, v) for t, v in enumerate(profile, start=1)])


def put_gate(rows, step, layer, gate, low, high):
    """A gate whose shares near 0 / 1 vary over t (staying valid fractions) but average to low / high."""
    amplitude = 0.5 * min(low, high, 1 - low - high)
    wiggle = [amplitude * (-1) ** t for t in range(1, T + 1)]
    return put(rows, "gates", lambda r: (r[0], r[1], r[2]) != (step, layer, gate),
               [(step, layer, gate, t, 0.5, low + w, high - w) for t, w in enumerate(wiggle, start=1)])


def run(rows):
    return RunData(metrics=rd.frame(rows["metrics"], rd.METRIC_COLUMNS),
                   time_grads=rd.frame(rows["time_grads"], rd.TIME_GRAD_COLUMNS),
                   gates=rd.frame(rows["gates"], rd.GATE_COLUMNS),
                   events=rd.frame(rows["events"], rd.EVENT_COLUMNS))


RNN = RunConfig()
RNN2 = RunConfig(num_layers=2)
LSTM = RunConfig(cell="lstm")
GRU = RunConfig(cell="gru")
CONFIGS = {"rnn-tanh": RNN, "rnn-tanh-2-layers": RNN2, "rnn-relu": RunConfig(activation="relu"),
           "lstm": LSTM, "lstm-2-layers": RunConfig(cell="lstm", num_layers=2), "gru": GRU}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_healthy_run_fires_no_rule(config):
    data = run(healthy(config))
    assert dg.diagnose(data, config) == []


# --- time_gradient_fit ----------------------------------------------------------------------------------
@pytest.mark.parametrize("a", [0.5, 0.9, 1.1], ids=["halves", "shrinks-0.9", "grows-1.1"])
def test_time_gradient_fit_recovers_a_geometric_profile(a):
    n = 30
    fit = dg.time_gradient_fit([a ** (n - t) for t in range(1, n + 1)])
    assert fit.gain == pytest.approx(a, rel=1e-9, abs=0)
    assert fit.ratio == pytest.approx(a ** (n - 1), rel=1e-9, abs=0)
    assert fit.underflow_steps == 0
    if a < 1:
        assert fit.horizon == pytest.approx(math.log(1e-3) / math.log(a), rel=1e-9, abs=0)
    else:
        assert fit.horizon is None


def test_time_gradient_fit_counts_underflow_and_fits_the_rest():
    fit = dg.time_gradient_fit([0.0, 0.0] + [0.5 ** (10 - t) for t in range(3, 11)])
    assert fit.underflow_steps == 2
    assert fit.ratio == 0.0
    assert fit.gain == pytest.approx(0.5, rel=1e-9, abs=0)


@pytest.mark.parametrize("profile", [[0.0] * 5, [0.0, 0.0, 0.0, 0.0, 1.0]], ids=["all-zero", "one-positive"])
def test_time_gradient_fit_needs_two_positive_entries_for_a_gain(profile):
    fit = dg.time_gradient_fit(profile)
    assert (fit.gain, fit.horizon) == (None, None)
    assert fit.underflow_steps == profile.count(0.0)


# --- exploding rules ------------------------------------------------------------------------------------
def test_nonfinite_reports_the_first_event_and_the_total():
    rows = healthy(RNN)
    rows["events"] = [(12, rd.EVENT_SKIPPED_STEP, "loss", None, None, 1, 0, 0),  # not a non-finite row
                      (41, rd.EVENT_NONFINITE, "loss", None, None, 1, 0, 0),
                      (40, rd.EVENT_NONFINITE, "hidden", 0, 7, 5, 0, 2),
                      (40, rd.EVENT_NONFINITE, "grad:rnn.weight_hh_l0", 0, None, 3, 1, 0)]
    d = dg.check_nonfinite(run(rows), RNN)
    assert (d.kind, d.rule) == ("exploding", "nonfinite")
    assert d.evidence == {"step": 40, "tensor": "hidden", "layer": 0, "time_step": 7, "nan": 5, "posinf": 0,
                          "neginf": 2, "count": 3}
    assert "step 40" in d.message and "hidden state of layer 0 at time step 7" in d.message


def test_skipped_steps_alone_are_not_nonfinite():
    rows = healthy(RNN)
    rows["events"] = [(12, rd.EVENT_SKIPPED_STEP, "loss", None, None, 1, 0, 0)]
    assert dg.check_nonfinite(run(rows), RNN) is None


def growing(start, rate, from_step):
    """Flat at `start` until `from_step`, then multiplied by `rate` every step."""
    return {s: start * rate ** max(0, s - from_step) for s in STEPS}


def test_weight_growth_names_the_layer_and_the_doubling():
    rows = put_metric(healthy(RNN2), rd.WEIGHT_NORM, 1, growing(4.0, 1.05, 50))
    d = dg.check_weight_growth(run(rows), RNN2)
    # 1.05**14 = 1.98 < 2 < 1.05**15 = 2.08: step 65 is the first more than twice the low point at step 50.
    assert (d.kind, d.rule) == ("exploding", "weight_growth")
    assert d.evidence == pytest.approx({"layer": 1, "start_step": 50, "end_step": 65, "start_value": 4.0,
                                        "end_value": 4.0 * 1.05 ** 15, "factor": 1.05 ** 15}, rel=1e-12)


@pytest.mark.parametrize("values", [growing(4.0, 1.01, 20), {s: 4.0 * (1.9 if s > 50 else 1.0) for s in STEPS}],
                         ids=["doubles-over-70-steps", "jumps-1.9x"])
def test_weight_growth_ignores_slower_growth(values):
    rows = put_metric(healthy(RNN), rd.WEIGHT_NORM, 0, values)
    assert dg.check_weight_growth(run(rows), RNN) is None


def grad_streaks(*streaks, base=0.5):
    """Layer-1 grad norms: `base`, except (first, last, value) streaks."""
    values = dict.fromkeys(STEPS, base)
    for first, last, value in streaks:
        values.update(dict.fromkeys(range(first, last + 1), value))
    return values


def test_grad_above_one_reports_the_longest_streak_on_every_layer():
    rows = put_metric(healthy(RNN2), rd.GRAD_NORM, 0, dict.fromkeys(STEPS, 2.0))
    rows = put_metric(rows, rd.GRAD_NORM, 1, grad_streaks((31, 60, 1.5), (71, 80, 3.0)))
    d = dg.check_grad_above_one(run(rows), RNN2)
    assert (d.kind, d.rule) == ("exploding", "grad_above_one")
    assert d.evidence == {"layers": [0, 1], "start_step": 31, "end_step": 60, "steps": 30, "min_value": 1.5,
                          "max_value": 2.0, "limit": 1.0}


@pytest.mark.parametrize("layer0, layer1, fires", [
    (2.0, grad_streaks((31, 50, 1.5)), True),
    (2.0, grad_streaks((31, 49, 1.5)), False),
    (2.0, grad_streaks(), False),
    (0.5, grad_streaks((1, 100, 1.5)), False),
], ids=["20-steps-fires", "19-steps-quiet", "one-layer-below", "other-layer-below"])
def test_grad_above_one_needs_patience_and_every_layer(layer0, layer1, fires):
    rows = put_metric(healthy(RNN2), rd.GRAD_NORM, 0, dict.fromkeys(STEPS, layer0))
    rows = put_metric(rows, rd.GRAD_NORM, 1, layer1)
    assert (dg.check_grad_above_one(run(rows), RNN2) is not None) == fires


def test_clip_spikes_counts_jumps_over_the_running_median():
    # Step 15 has fewer than SPIKE_WINDOW earlier steps, so it is not judged.
    values = {**dict.fromkeys(STEPS, 0.3), 15: 100.0, 50: 6.0, 80: 4.0, 90: 2.9}
    rows = put_metric(healthy(RNN), rd.GRAD_NORM_PRE_CLIP, None, values)
    d = dg.check_clip_spikes(run(rows), RNN)
    assert (d.kind, d.rule) == ("exploding", "clip_spikes")
    assert d.evidence == pytest.approx({"count": 2, "step": 50, "value": 6.0, "median": 0.3, "factor": 20.0,
                                        "spike_factor": 10.0, "window": 20}, rel=1e-12)


def test_clip_spikes_ignore_jumps_that_stay_below_one():
    """A norm rising 0.01 -> 0.5 is a model starting to learn, not an explosion."""
    values = {**dict.fromkeys(STEPS, 0.01), 50: 0.5, 80: 0.9}
    rows = put_metric(healthy(RNN), rd.GRAD_NORM_PRE_CLIP, None, values)
    assert dg.check_clip_spikes(run(rows), RNN) is None


# --- vanishing rules ------------------------------------------------------------------------------------
def test_time_decay_reads_the_latest_finite_profile_of_layer_0():
    n, a = 50, 0.7
    rows = put_profile(healthy(RNN2), 90, 0, [a ** (n - t) for t in range(1, n + 1)])
    rows = put_profile(rows, 100, 0, [math.nan] + [1.0] * (n - 1))  # latest, but not finite
    rows = put_profile(rows, 90, 1, [1e-9] * (n - 1) + [1.0])  # another layer: not read
    d = dg.check_time_decay(run(rows), RNN2)
    assert (d.kind, d.rule) == ("vanishing", "time_decay")
    assert d.evidence == pytest.approx({"step": 90, "layer": 0, "gain": a, "ratio": a ** (n - 1),
                                        "horizon": math.log(1e-3) / math.log(a), "underflow_steps": 0,
                                        "seq_len": n}, rel=1e-9)
    assert "~19 steps" in d.message and "step 90" in d.message


def test_time_decay_fires_on_underflow_even_without_decay():
    rows = put_profile(healthy(RNN), 100, 0, [0.0] * 5 + [1.0] * 15)
    d = dg.check_time_decay(run(rows), RNN)
    assert d.evidence == {"step": 100, "layer": 0, "gain": 1.0, "ratio": 0.0, "horizon": None,
                          "underflow_steps": 5, "seq_len": 20}
    assert "5 of the 20 time steps underflowed" in d.message


@pytest.mark.parametrize("profile", [[1.5e-3] + [0.7 ** (20 - t) for t in range(2, 21)], [0.0] * 20],
                         ids=["ratio-above-1e-3", "no-gradient-at-all"])
def test_time_decay_stays_quiet(profile):
    rows = put_profile(healthy(RNN), 100, 0, profile)
    assert dg.check_time_decay(run(rows), RNN) is None


SATURATED = {
    "rnn-tanh-hidden": (RNN, lambda r: put_metric(r, rd.HIDDEN_SATURATION, 0, {90: 0.1, 100: 0.8}),
                        {"layer": 0, "unit": "hidden", "step": 100, "share": 0.8, "limit": 0.5}, "saturated"),
    "rnn-relu-dead": (RunConfig(activation="relu"),
                      lambda r: put_metric(r, rd.HIDDEN_SATURATION, 0, {100: 0.6}),
                      {"layer": 0, "unit": "hidden", "step": 100, "share": 0.6, "limit": 0.5}, "dead"),
    "gru-reset-gate": (GRU, lambda r: put_gate(r, 100, 0, "reset", 0.4, 0.3),
                       {"layer": 0, "unit": "reset", "step": 100, "share": 0.7, "limit": 0.5},
                       "stuck near 0 or 1"),
    "lstm-forget-closed": (LSTM, lambda r: put_gate(r, 100, 0, "forget", 0.7, 0.0),
                           {"layer": 0, "unit": "forget", "step": 100, "share": 0.7, "limit": 0.5},
                           "nearly closed"),
}


@pytest.mark.parametrize("config, change, expected, words", SATURATED.values(), ids=SATURATED.keys())
def test_saturation_fires(config, change, expected, words):
    d = dg.check_saturation(run(change(healthy(config))), config)
    assert (d.kind, d.rule) == ("vanishing", "saturation")
    numbers = {k: v for k, v in expected.items() if not isinstance(v, str)}
    assert {k: d.evidence[k] for k in numbers} == pytest.approx(numbers, rel=1e-12)
    assert {k: d.evidence[k] for k in expected if k not in numbers} == {
        k: v for k, v in expected.items() if k not in numbers}
    assert words in d.message


def test_saturation_reports_the_worst_of_several():
    config = RunConfig(cell="lstm", num_layers=2)
    rows = put_metric(healthy(config), rd.HIDDEN_SATURATION, 0, {100: 0.6})
    rows = put_metric(rows, rd.HIDDEN_SATURATION, 1, {100: 0.9})
    d = dg.check_saturation(run(rows), config)
    assert (d.evidence["layer"], d.evidence["share"]) == (1, 0.9)
    assert [(f["layer"], f["unit"]) for f in d.evidence["saturated"]] == [(0, "hidden"), (1, "hidden")]


QUIET_SATURATION = {
    "lstm-forget-open": (LSTM, lambda r: put_gate(r, 100, 0, "forget", 0.0, 0.99)),
    "gru-update-open": (GRU, lambda r: put_gate(r, 100, 0, "update", 0.0, 0.99)),
    "candidate-ignored": (GRU, lambda r: put_gate(r, 100, 0, "candidate", 0.5, 0.5)),
    "only-an-earlier-step": (LSTM, lambda r: put_gate(r, 90, 0, "output", 0.5, 0.5)),
    "hidden-earlier-only": (RNN, lambda r: put_metric(r, rd.HIDDEN_SATURATION, 0, {90: 0.9, 100: 0.2})),
    "hidden-at-limit": (RNN, lambda r: put_metric(r, rd.HIDDEN_SATURATION, 0, {100: 0.5})),
}


@pytest.mark.parametrize("config, change", QUIET_SATURATION.values(), ids=QUIET_SATURATION.keys())
def test_saturation_stays_quiet(config, change):
    assert dg.check_saturation(run(change(healthy(config))), config) is None


@pytest.mark.parametrize("activation, bound", [("tanh", 1.0), ("sigmoid", 4.0), ("relu", 1.0), ("linear", 1.0)])
def test_vanishing_bound_is_one_over_gamma(activation, bound):
    assert dg.vanishing_bound(activation) == bound


SPECTRAL = {
    "tanh-below-1": (RNN, {0: 0.6}, {"layer": 0, "step": 100, "sigma_max": 0.6, "bound": 1.0,
                                     "activation": "tanh"}),
    "sigmoid-below-4": (RunConfig(activation="sigmoid"), {0: 2.0},
                        {"layer": 0, "step": 100, "sigma_max": 2.0, "bound": 4.0, "activation": "sigmoid"}),
    "smallest-sigma-wins": (RNN2, {0: 0.9, 1: 0.5}, {"layer": 1, "step": 100, "sigma_max": 0.5, "bound": 1.0,
                                                   "activation": "tanh"}),
    "tanh-at-bound": (RNN, {0: 1.0}, None),
    "relu-above": (RunConfig(activation="relu"), {0: 2.0}, None),
    "lstm-not-judged": (LSTM, {0: 0.5}, None),
}


@pytest.mark.parametrize("config, sigma, expected", SPECTRAL.values(), ids=SPECTRAL.keys())
def test_spectral(config, sigma, expected):
    rows = healthy(config)
    for layer, value in sigma.items():
        rows = put_metric(rows, rd.SIGMA_MAX, layer, {90: 0.1, 100: value}, tensor=f"rnn.weight_hh_l{layer}")
    d = dg.check_spectral(run(rows), config)
    assert (d and d.evidence) == expected
    if expected:
        assert (d.kind, d.rule) == ("vanishing", "spectral")


# --- all rules together: order, remedies, JSON ----------------------------------------------------------
@functools.cache
def sick_diagnoses(config):
    """Diagnoses of a run on which every rule that applies to `config` fires."""
    rows = healthy(config)
    rows["events"] = [(70, rd.EVENT_NONFINITE, "loss", None, None, 1, 0, 0)]
    for k in range(config.num_layers):
        rows = put_metric(rows, rd.WEIGHT_NORM, k, growing(4.0, 1.05, 50))
        rows = put_metric(rows, rd.GRAD_NORM, k, dict.fromkeys(STEPS, 2.0))
        rows = put_metric(rows, rd.HIDDEN_SATURATION, k, {100: 0.8})
        rows = put_metric(rows, rd.SIGMA_MAX, k, {100: 0.5}, tensor=f"rnn.weight_hh_l{k}")
    rows = put_metric(rows, rd.GRAD_NORM_PRE_CLIP, None, {**dict.fromkeys(STEPS, 0.3), 60: 9.0})
    rows = put_profile(rows, 100, 0, [0.0] + [0.5 ** (T - t) for t in range(2, T + 1)])
    return tuple(dg.diagnose(run(rows), config))


SICK = {
    "defaults": RunConfig(),
    "irnn-clip-none": RunConfig(activation="relu", init="identity", clip="none"),
    "sigmoid-clip-value-tiny-lr": RunConfig(activation="sigmoid", clip="value", lr=1e-7, init="normal"),
    "rnn-clip-at-minimum": RunConfig(clip_threshold=1e-6, weight_decay=1e-3, forget_bias=-1.0),
    "relu-he-clip-5": RunConfig(activation="relu", init="he", clip_threshold=5.0, num_layers=2),
    "lstm-forget-bias-0": RunConfig(cell="lstm", forget_bias=0.0, init="xavier_uniform", init_scale=3.0),
    "lstm-orthogonal": RunConfig(cell="lstm", init="orthogonal", optimizer="adam", lr=1e-3),
    "gru-small-init": RunConfig(cell="gru", init_scale=0.5, weight_decay=1e-4),
}
RULES = ["nonfinite", "weight_growth", "grad_above_one", "clip_spikes", "time_decay", "saturation", "spectral"]


@pytest.mark.parametrize("config", SICK.values(), ids=SICK.keys())
def test_every_rule_fires_in_order_with_applicable_remedies(config):
    found = sick_diagnoses(config)
    expected = RULES if config.cell == "rnn" else RULES[:-1]
    assert [d.rule for d in found] == expected
    assert [d.kind for d in found] == ["exploding"] * 4 + ["vanishing"] * (len(expected) - 4)
    assert any(d.remedies for d in found)
    for d in found:
        assert len({r.label for r in d.remedies}) == len(d.remedies)
        for remedy in d.remedies:
            changed = config.replace(**remedy.changes)
            assert changed != config, remedy.label


@pytest.mark.parametrize("config", SICK.values(), ids=SICK.keys())
def test_diagnoses_are_strict_json(config):
    for d in sick_diagnoses(config):
        data = d.to_dict()
        assert set(data) == {"kind", "rule", "message", "evidence", "remedies"}
        assert json.loads(json.dumps(data, allow_nan=False)) == data
        assert data["remedies"] == [{"label": r.label, "changes": r.changes} for r in d.remedies]


def remedies(config, rule):
    d = next(d for d in sick_diagnoses(config) if d.rule == rule)
    return [r.changes for r in d.remedies]


@pytest.mark.parametrize("config, first", [
    (RunConfig(clip="none"), {"clip": "norm", "clip_threshold": 1.0}),
    (RunConfig(clip="value"), {"clip": "norm", "clip_threshold": 1.0}),
    (RunConfig(clip_threshold=1.0), {"clip_threshold": 0.5}),
    (RunConfig(clip_threshold=5.0), {"clip_threshold": 1.0}),
    (RunConfig(clip_threshold=1e-6), {"lr": 0.01}),  # halving would leave the allowed range
], ids=["none", "value", "norm-at-1", "norm-at-5", "norm-at-minimum"])
def test_clipping_is_the_first_cure_for_spikes(config, first):
    assert remedies(config, "clip_spikes")[0] == first


def test_vanishing_remedies_fit_the_cell():
    assert remedies(RunConfig(), "time_decay") == [
        {"cell": "lstm"}, {"cell": "gru"}, {"init": "identity", "activation": "relu", "init_scale": 1.0},
        {"init": "orthogonal", "init_scale": 1.0}, {"activation": "relu", "init": "he", "init_scale": 1.0}]
    assert remedies(RunConfig(forget_bias=0.0), "time_decay")[:2] == [
        {"cell": "lstm", "forget_bias": 1.0}, {"cell": "gru", "forget_bias": 1.0}]
    assert remedies(RunConfig(cell="gru", forget_bias=0.0), "time_decay")[:2] == [
        {"forget_bias": 1.0}, {"cell": "lstm", "forget_bias": 1.0}]
    assert remedies(RunConfig(cell="lstm", forget_bias=0.0), "time_decay") == [
        {"forget_bias": 1.0}, {"init": "orthogonal", "init_scale": 1.0}]
    assert remedies(RunConfig(cell="lstm", init="orthogonal"), "time_decay") == []


def test_sigmoid_rnn_is_not_offered_an_orthogonal_init():
    # sigma_max = 1 is still below the 1/gamma = 4 bound of a sigmoid RNN.
    offered = remedies(RunConfig(activation="sigmoid"), "spectral")
    assert all(changes.get("init") != "orthogonal" for changes in offered)
    assert {"init": "identity", "activation": "relu", "init_scale": 1.0} in offered
