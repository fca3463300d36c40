"""Chart data keeps what a chart must show (every bucket's extremes, ends, NaN/Inf, events) within its point
budget, and a stored run gives the same tables as the same run in memory, whether short or long."""

import math

import numpy as np
import pandas as pd
import pytest

from diagnostics import rundata as rd
from diagnostics.chartdata import (FINITE, NONFINITE, UNDERFLOW, at_step, downsample, lab_chart_data,
                                   lab_chart_data_from_memory, scrub_steps, thin_steps)
from diagnostics.gradflow import time_gradient_fit
from diagnostics.config import RunConfig
from diagnostics.runner import run_into_store
from diagnostics.store import CHART_BLOCK, CHART_RECORDED_STEPS, CHART_TIME_BUCKETS, CHART_WHOLE_STEPS, Store

NAN, INF = float("nan"), float("inf")
FRAMES = ["loss", "metric", "grad_norms", "weights", "update_ratios", "sigma_max", "saturation", "time_grad_cells",
          "time_profile", "time_fit_line", "events"]


# --- downsample on crafted series -----------------------------------------------------------------------
def sine_with_spike(steps: int, spike_step: int, layer=None, name="grad_norm") -> pd.DataFrame:
    """A smooth series with one spike, the thing a naive stride would drop."""
    step = np.arange(1, steps + 1)
    value = np.sin(step / 50.0) + 2.0
    value[spike_step - 1] = 1e6
    return pd.DataFrame({"step": step, "name": name, "layer": pd.array([layer] * steps, dtype="Int64"),
                         "tensor": "", "value": value})


def bucket_extremes(series: pd.DataFrame, max_points: int) -> set[int]:
    """Steps of each equal-width bucket's min and max finite value, computed apart from `downsample`."""
    first, last = series["step"].min(), series["step"].max()
    finite = series[np.isfinite(series["value"])]
    bucket = (finite["step"] - first) * (max_points // 2) // (last - first + 1)
    by_bucket = finite.groupby(bucket)
    return set(finite.loc[by_bucket["value"].idxmin(), "step"]) | set(finite.loc[by_bucket["value"].idxmax(), "step"])


@pytest.mark.parametrize("max_points", [50, 200, 2000], ids=lambda n: f"max{n}")
def test_downsample_keeps_extremes_ends_nonfinite_and_keep_steps(max_points):
    df = sine_with_spike(10_000, spike_step=4321)
    df.loc[[99, 5000], "value"] = [NAN, INF]  # steps 100 and 5001
    df.loc[7000, "value"] = -INF  # step 7001
    out = downsample(df, max_points, keep_steps=[2500, 2501])
    kept = set(out["step"])
    assert bucket_extremes(df, max_points) <= kept
    assert {1, 10_000, 4321, 100, 5001, 7001, 2500, 2501} <= kept
    assert len(out) <= max_points + 7  # first, last, 3 non-finite, 2 keep_steps on top of the buckets
    assert out.columns.tolist() == df.columns.tolist()
    pd.testing.assert_frame_equal(out, df[df["step"].isin(kept)].reset_index(drop=True))


def test_downsample_keeps_the_exact_rows_of_a_small_crafted_series():
    # 20 steps into 2 buckets of 10 (max_points 4): bucket 1 has min at step 3, max at step 7 (the spike);
    # bucket 2 has min at step 18, max at step 11.
    value = [5.0, 4.0, 1.0, 4.0, 5.0, 6.0, 90.0, 5.0, 4.0, 3.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.5, 0.5, 2.0, 3.0]
    df = pd.DataFrame({"step": range(1, 21), "name": "loss", "value": value})
    assert downsample(df, max_points=4)["step"].tolist() == [1, 3, 7, 11, 18, 20]


@pytest.mark.parametrize("steps", [1, 10, 2000], ids=lambda n: f"{n}steps")
def test_downsample_is_a_no_op_under_the_limit(steps):
    df = sine_with_spike(steps, spike_step=1)
    df.loc[0, "value"] = NAN
    pd.testing.assert_frame_equal(downsample(df, max_points=2000), df)


def test_downsample_treats_each_series_apart_including_na_keys():
    long_ = sine_with_spike(5000, spike_step=10, layer=None)
    short = sine_with_spike(300, spike_step=20, layer=0)
    other = sine_with_spike(5000, spike_step=4000, layer=1)
    out = downsample(pd.concat([long_, short, other], ignore_index=True), max_points=400)
    per_layer = {k: g for k, g in out.groupby(out["layer"].astype("string").fillna("NA"))}
    assert len(per_layer["0"]) == 300  # under the limit: untouched
    for key, series, spike in (("NA", long_, 10), ("1", other, 4000)):
        assert len(per_layer[key]) <= 402 and spike in set(per_layer[key]["step"])
        assert bucket_extremes(series, 400) <= set(per_layer[key]["step"])


def test_downsample_of_an_empty_table_is_empty():
    empty = rd.RunData().metrics
    assert downsample(empty).empty


def test_thin_steps_is_bounded_and_keeps_first_last_and_extra():
    recorded = np.arange(10, 100_001, 10)
    thinned = thin_steps(recorded, extra=[99_990])
    assert len(thinned) <= CHART_RECORDED_STEPS
    assert {10, 100_000, 99_990} <= set(thinned) and set(thinned) <= set(recorded)
    gaps = np.diff(thin_steps(recorded))
    assert gaps.max() - gaps.min() <= 20  # evenly spaced, up to snapping to the 10-step schedule
    assert thin_steps(range(1, 21)).tolist() == list(range(1, 21))  # few recorded steps: all of them


# --- stored runs ----------------------------------------------------------------------------------------
SMALL = dict(hidden_size=8, batch_size=8, seq_len=5)
DIVERGES = RunConfig(activation="relu", init="normal", init_scale=3.0, clip="none", lr=1.0, seq_len=30,
                     hidden_size=16, batch_size=16, steps=20, record_every=5)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with Store(tmp_path_factory.mktemp("chartdata") / "runs.sqlite") as s:
        yield s


@pytest.fixture(scope="module")
def stored_runs(store):
    """Real short runs: a clipped 2-layer GRU (gates) and an RNN that diverges at step 2."""
    configs = {"gru": RunConfig(cell="gru", num_layers=2, steps=20, record_every=3, **SMALL),
               "diverged": DIVERGES}
    return {name: (run_into_store(config, store).run_id, config) for name, config in configs.items()}


def chart_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    wanted = metrics["tensor"].isin(["", "readout.weight"]) | (metrics["name"] == rd.SIGMA_MAX)
    names = [rd.LOSS, rd.METRIC, rd.GRAD_NORM_PRE_CLIP, rd.GRAD_NORM_POST_CLIP, rd.GRAD_NORM, rd.WEIGHT_NORM,
             rd.WEIGHT_MAX_ABS, rd.UPDATE_RATIO, rd.HIDDEN_SATURATION, rd.SIGMA_MAX]
    heldout = metrics["name"] == rd.HELDOUT_METRIC  # read apart, after the chart rows
    return pd.concat([metrics[wanted & metrics["name"].isin(names)], metrics[heldout]]).reset_index(drop=True)


@pytest.mark.parametrize("run", ["gru", "diverged"])
def test_short_stored_run_reads_for_charts_exactly_what_load_reads(store, stored_runs, run):
    run_id, _ = stored_runs[run]
    full, charts = store.load(run_id), store.load_for_charts(run_id)
    pd.testing.assert_frame_equal(charts.metrics, chart_rows(full.metrics), check_exact=True)
    # the same rows; the store groups gates by name, where `load` keeps the order they were recorded in
    order = {"time_grads": ["step", "layer", "t"], "gates": ["step", "layer", "gate", "t"], "events": ["step"]}
    for table, keys in order.items():
        got, want = (getattr(d, table).sort_values(keys, kind="stable").reset_index(drop=True) for d in (charts, full))
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=table)


@pytest.mark.parametrize("run", ["gru", "diverged"])
def test_stored_and_in_memory_paths_give_the_same_chart_data(store, stored_runs, run):
    run_id, config = stored_runs[run]
    stored, memory = lab_chart_data(store, run_id), lab_chart_data_from_memory(store.load(run_id), config)
    for name in FRAMES:
        pd.testing.assert_frame_equal(getattr(stored, name), getattr(memory, name), check_exact=True, obj=name)
    assert (stored.profile_step, stored.time_fit, stored.config) == (memory.profile_step, memory.time_fit, config)


def test_chart_data_of_a_real_run_has_every_chart_series(store, stored_runs):
    run_id, config = stored_runs["gru"]
    data = lab_chart_data(store, run_id)
    assert set(data.grad_norms["series"]) == {"layer 0", "layer 1", "readout", "global, pre-clip",
                                              "global, post-clip"}
    assert set(data.weights["quantity"]) == {"‖W‖ (L2 norm)", "max |w|"}
    assert set(data.sigma_max["series"]) == {"layer 0", "layer 1"}
    assert set(data.saturation["series"]) == {
        f"layer {k} {what}" for k in (0, 1) for what in
        ("hidden units", "reset gate (< 0.1 or > 0.9)", "update gate (< 0.1)")}
    assert data.saturation["value"].between(0, 1).all()
    T = config.seq_len + 2
    assert data.time_grad_cells.groupby(["layer", "step"]).size().eq(T).all()
    assert data.profile_step == 18 and len(data.time_profile) == 2 * T
    assert data.time_fit is not None and data.time_fit.gain > 0 and len(data.time_fit_line) == T
    assert data.events.empty


def test_diverged_run_keeps_its_events_and_their_rows(store, stored_runs):
    run_id, _ = stored_runs["diverged"]
    data = lab_chart_data(store, run_id)
    first = data.events.iloc[0]
    assert (first["step"], first["tensor"], first["layer"], first["time_step"]) == (2, "hidden", 0, 6)
    assert set(data.events["step"]) == {2} and len(data.events) == 8
    assert math.isnan(data.loss.set_index("step").loc[2, "value"])
    assert data.profile_step == 1  # step 2 was not recorded; step 1's profile is finite


# --- a long synthetic run -------------------------------------------------------------------------------
LONG = 17_000
EVERY = 100  # recorded steps
T_LONG = 160  # longer than CHART_TIME_BUCKETS, so t is bucketed
LONG_CONFIG = RunConfig(cell="lstm", task="adding", seq_len=T_LONG, steps=LONG, record_every=EVERY)
SPECIAL_STEPS = {777: NAN, 5555: INF, 12345: -INF}
EVENT_STEPS = (4242, 15000)


def long_run_rows(rng: np.random.Generator):
    """Each step of a long run: a few chart series, one per-tensor row charts leave out, and on recorded steps
    a time profile (with underflow, and NaN on the last recorded step), two gates and sigma_max."""
    loss, grads = rng.lognormal(size=LONG), rng.random((LONG, 4)).tolist()
    for step, value in SPECIAL_STEPS.items():
        loss[step - 1] = value
    decay = 0.9 ** np.arange(T_LONG, 0, -1)
    for step in range(1, LONG + 1):
        g = grads[step - 1]
        rows = {"metrics": [(step, rd.LOSS, None, "", float(loss[step - 1])), (step, rd.GRAD_NORM, 0, "", g[0]),
                            (step, rd.GRAD_NORM, None, "readout.weight", g[1]),
                            (step, rd.GRAD_NORM, 0, "rnn.weight_hh_l0", g[2])]}
        if step % EVERY == 0:
            profile = decay * (0.5 + g[3])
            profile[:10] = 0.0
            profile[150] = NAN if step == LONG else profile[150]
            rows["time_grads"] = [(step, 0, t + 1, float(v)) for t, v in enumerate(profile)]
            rows["gates"] = [(step, 0, gate, t, 0.5, g[3] / 2, g[3] / 3) for gate in ("input", "forget")
                             for t in range(1, T_LONG + 1)]
            rows["metrics"].append((step, rd.SIGMA_MAX, 0, "rnn.weight_hh_l0", g[3]))
        if step in EVENT_STEPS:
            rows["events"] = [(step, rd.EVENT_NONFINITE, "grad:rnn.weight_hh_l0", 0, None, 3, 0, 0)]
        yield step, rows


@pytest.fixture(scope="module")
def long_run(store):
    """A stored run longer than CHART_WHOLE_STEPS, written as training writes, with its full tables."""
    run_id = store.create_run(LONG_CONFIG.to_dict())
    writer = store.writer(run_id, flush_every=5000)
    for step, rows in long_run_rows(np.random.default_rng(0)):
        writer.add(step, **rows)
    writer.close("completed", {})
    return run_id, store.load(run_id)


def test_long_run_is_read_per_block_with_every_block_extreme(store, long_run):
    assert LONG > CHART_WHOLE_STEPS
    run_id, full = long_run
    charts = store.load_for_charts(run_id)
    got = charts.metrics
    keys = ["name", "tensor"]  # the layer follows from them in this run
    want = chart_rows(full.metrics)
    finite = want[np.isfinite(want["value"])]
    by_block = finite.groupby([*keys, finite["step"] // CHART_BLOCK])["value"]
    by_series = want.groupby(keys)["step"]
    must = pd.concat([finite.loc[by_block.idxmin()], finite.loc[by_block.idxmax()],
                      want[want["step"].eq(by_series.transform("min")) | want["step"].eq(by_series.transform("max"))],
                      want[~np.isfinite(want["value"]) | want["step"].isin(EVENT_STEPS)]]).drop_duplicates()
    found = must.merge(got, on=["step", *keys], how="left", suffixes=("", "_got"), indicator=True)
    assert (found["_merge"] == "both").all() and found["value"].equals(found["value_got"])
    assert got.merge(want, on=list(got.columns)[:4], suffixes=("", "_full"))["value"].size == len(got)
    assert set(got["tensor"]) == {"", "readout.weight", "rnn.weight_hh_l0"}  # the last only for sigma_max
    extras = 2 + len(SPECIAL_STEPS) + len(EVENT_STEPS)  # first, last, non-finite, event steps
    assert got.groupby(keys).size().le(2 * (LONG // CHART_BLOCK + 1) + extras).all()
    pd.testing.assert_frame_equal(charts.events, full.events, check_exact=True)


def test_long_run_chart_data_is_bounded_and_keeps_what_matters(store, long_run):
    data = lab_chart_data(store, long_run[0], max_points=500)
    loss = data.loss.set_index("step")["value"]
    assert len(loss) <= 500 + 2 + 3 + len(EVENT_STEPS)
    assert math.isnan(loss[777]) and loss[5555] == INF and loss[12345] == -INF
    assert set(EVENT_STEPS) <= set(loss.index) and {1, LONG} <= set(loss.index)
    assert data.grad_norms.groupby("series").size().le(500 + 4).all()
    assert data.events["step"].tolist() == list(EVENT_STEPS)
    cells = data.time_grad_cells
    assert cells["step"].nunique() <= CHART_RECORDED_STEPS
    assert cells.groupby("step").size().eq(CHART_TIME_BUCKETS).all()
    assert cells["t_from"].min() == 1 and cells["t_to"].max() == T_LONG
    assert set(cells["kind"]) == {FINITE, UNDERFLOW, NONFINITE}
    assert set(cells.loc[cells["kind"] == NONFINITE, "step"]) == {LONG}
    assert data.profile_step == LONG - EVERY and len(data.time_profile) == T_LONG
    assert data.time_fit.underflow_steps == 10 and data.time_fit.gain == pytest.approx(0.9)


def test_long_run_heatmap_profile_and_gates_match_the_full_data(store, long_run):
    run_id, full = long_run
    stored, memory = lab_chart_data(store, run_id), lab_chart_data_from_memory(full, LONG_CONFIG)
    for name in ("time_grad_cells", "time_profile", "time_fit_line", "events"):
        pd.testing.assert_frame_equal(getattr(stored, name), getattr(memory, name), check_exact=True, obj=name)
    gates = lambda d: d.saturation[d.saturation["series"].str.contains("gate")].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(gates(stored), gates(memory), rtol=1e-12, obj="gate saturation")
    assert len(gates(stored)) == 2 * stored.time_grad_cells["step"].nunique()


# --- a chosen recorded step (the scrubber) --------------------------------------------------------------
def test_scrub_steps_spreads_long_runs_and_keeps_the_chosen_step():
    assert scrub_steps([1, 3, 6, 9]) == [1, 3, 6, 9]
    long = list(range(1, 100_001, 10))
    offered = scrub_steps(long, keep=[12_341], count=200)
    assert offered[0] == 1 and offered[-1] == long[-1] and 12_341 in offered
    assert 200 <= len(offered) <= 201 and set(offered) <= set(long)


def test_a_stored_run_at_a_chosen_step_has_that_steps_profile_and_fit(store, stored_runs):
    run_id, config = stored_runs["gru"]
    steps = store.recorded_steps(run_id)
    assert steps == [1, 3, 6, 9, 12, 15, 18]  # the first and every record_every-th
    full = store.load(run_id).time_grads
    rows = store.time_grads_at(run_id, 6)
    expected = full[full["step"] == 6][["layer", "t", "value"]].astype({"layer": "int64"}).reset_index(drop=True)
    pd.testing.assert_frame_equal(rows, expected.astype({"t": "int64"}), check_dtype=False)
    data = at_step(lab_chart_data(store, run_id), rows, 6)
    assert data.profile_step == 6 and data.scrubbed
    assert sorted(data.time_profile["layer"].unique()) == [0, 1]
    layer0 = rows[rows["layer"] == 0]["value"]
    assert data.time_fit == time_gradient_fit(layer0) and not data.time_fit_line.empty
    broken = rows.assign(value=rows["value"].where(rows["t"] != 2))  # a profile with a NaN in it
    data = at_step(lab_chart_data(store, run_id), broken, 6)
    assert data.time_fit is None and data.time_fit_line.empty and data.profile_step == 6  # no fit through NaN
