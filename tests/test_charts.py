"""Each chart builder, on real runs (healthy, vanishing to float32 underflow, diverged to NaN), gives a spec with
its title, axis titles with units or scale, log scales where promised, the threshold lines at their values,
and the non-finite events; the spec is strict JSON whatever NaN, ±Inf or zeros the run holds."""

import dataclasses
import json
import math

import pytest

from diagnostics import charts
from diagnostics.chartdata import NONFINITE, UNDERFLOW, lab_chart_data_from_memory
from diagnostics.chartfacts import lab_facts
from diagnostics.config import RunConfig
from diagnostics.train import train

SMALL = dict(hidden_size=8, batch_size=8)
RUNS = {
    # diverges at step 2: the hidden state of layer 0 overflows at time step 6
    "diverged": RunConfig(activation="relu", init="normal", init_scale=3.0, clip="none", lr=1.0, seq_len=30,
                          hidden_size=16, batch_size=16, steps=20, record_every=5),
    # sigmoid slopes <= 1/4 over 80 steps: early time steps underflow to exactly 0
    "vanishing": RunConfig(activation="sigmoid", task="adding", seq_len=80, steps=6, record_every=2, **SMALL),
    "gru": RunConfig(cell="gru", num_layers=2, seq_len=5, steps=12, record_every=3, clip="norm",
                     clip_threshold=0.5, **SMALL),
}
STEP_CHARTS = ["loss_chart", "metric_chart", "grad_norm_chart", "weight_chart", "update_ratio_chart",
               "spectral_chart", "saturation_chart", "time_grad_heatmap"]
BUILDERS = [*STEP_CHARTS, "time_profile_chart"]
LOG_Y = {"loss_chart", "grad_norm_chart", "weight_chart", "update_ratio_chart", "spectral_chart",
         "time_profile_chart"}


@pytest.fixture(scope="module")
def runs():
    return {name: lab_chart_data_from_memory(train(config)[1], config) for name, config in RUNS.items()}


_SPECS: dict[tuple[str, str], dict] = {}


def spec(runs, run: str, builder: str) -> dict:
    """The builder's Vega-Lite spec for a run, built once per module (to_dict validates, which takes a while)."""
    if (run, builder) not in _SPECS:
        _SPECS[run, builder] = getattr(charts, builder)(runs[run]).to_dict()
    return _SPECS[run, builder]


# --- reading specs --------------------------------------------------------------------------------------
def nodes(obj):
    """Every dict inside a spec, depth first."""
    if isinstance(obj, dict):
        yield obj
        obj = list(obj.values())
    if isinstance(obj, list):
        for item in obj:
            yield from nodes(item)


def mark(node: dict) -> str | None:
    m = node.get("mark")
    return m.get("type") if isinstance(m, dict) else m


def rows(s: dict, node: dict) -> list[dict]:
    """A mark's rows; Altair lifts the data of a chart whose layers share one dataset to the top."""
    return s["datasets"][node.get("data", s.get("data"))["name"]]


def all_rows(s: dict) -> list[dict]:
    return [row for data in s["datasets"].values() for row in data]


def channel(s: dict, name: str) -> list[dict]:
    return [n["encoding"][name] for n in nodes(s) if name in n.get("encoding", {})]


def subtitle(s: dict) -> str:
    return " | ".join(s["title"]["subtitle"])


def rule_labels(s: dict) -> dict[str, float]:
    """The labelled horizontal lines of a chart: label -> value."""
    return {row["label"]: row["value"] for row in all_rows(s) if set(row) == {"label", "value"}}


def event_rows(s: dict) -> list[dict]:
    return [row for n in nodes(s) if mark(n) == "rule" and "data" in n for row in rows(s, n) if "tensors" in row]


# --- every builder --------------------------------------------------------------------------------------
@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("builder", BUILDERS)
def test_chart_has_title_axis_titles_and_is_strict_json(runs, run, builder):
    s = spec(runs, run, builder)
    json.dumps(s, allow_nan=False)  # what the browser gets: NaN/Inf must not leak into it
    assert s["title"]["text"]
    x_titles = {c["title"] for c in channel(s, "x") if "title" in c}
    y_titles = {c["title"] for c in channel(s, "y") if "title" in c}
    T = {"diverged": 32, "vanishing": 80, "gru": 7}[run]  # agreement adds 2 to seq_len, adding does not
    assert x_titles == ({f"time step t (1 … {T})"} if builder == "time_profile_chart" else {"training step"})
    assert y_titles and all("(" in title for title in y_titles)  # a unit or a scale in every y title


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("builder", sorted(LOG_Y))
def test_log_charts_are_log_scaled_and_draw_only_positive_finite_values(runs, run, builder):
    s = spec(runs, run, builder)
    lines = [n for n in nodes(s) if mark(n) == "line"]
    assert lines and all(n["encoding"]["y"]["scale"] == {"type": "log"} for n in lines)
    assert all("log scale" in n["encoding"]["y"]["title"] for n in lines)
    values = [row["value"] for n in lines for row in rows(s, n)]
    assert values and all(isinstance(v, float) and 0 < v < math.inf for v in values)


@pytest.mark.parametrize("builder", STEP_CHARTS)
def test_diverged_run_marks_its_nonfinite_step_on_every_step_chart(runs, builder):
    s = spec(runs, "diverged", builder)
    events = event_rows(s)
    assert len(events) == 1
    assert {k: events[0][k] for k in ("step", "tensor", "layer", "time_step", "count")} == {
        "step": 2, "tensor": "hidden", "layer": 0, "time_step": 6, "count": 8}
    tooltip = {t["field"] for n in nodes(s) if mark(n) == "rule" for t in n["encoding"].get("tooltip", [])}
    assert {"step", "tensor", "layer", "time_step"} <= tooltip
    assert "first at step 2" in subtitle(s)


@pytest.mark.parametrize("builder", STEP_CHARTS)
def test_healthy_run_has_no_event_marks(runs, builder):
    assert event_rows(spec(runs, "gru", builder)) == []


@pytest.mark.parametrize("builder", ["loss_chart", "grad_norm_chart"])
def test_nan_values_are_left_out_of_log_charts_and_counted(runs, builder):
    assert "not drawn: NaN, ±Inf or below 0" in subtitle(spec(runs, "diverged", builder))


# --- thresholds and baselines ---------------------------------------------------------------------------
@pytest.mark.parametrize("run, threshold", [("gru", 0.5), ("diverged", None)], ids=["clip-norm", "no-clip"])
def test_grad_norm_chart_draws_the_exploding_line_and_the_clip_line(runs, run, threshold):
    s = spec(runs, run, "grad_norm_chart")
    labels = rule_labels(s)
    assert labels["1.0 (exploding threshold)"] == 1.0
    clip = {label: v for label, v in labels.items() if label.startswith("clip threshold")}
    assert clip == ({} if threshold is None else {"clip threshold 0.5 (global norm)": 0.5})
    series = {row["series"] for n in nodes(s) if mark(n) == "line" for row in rows(s, n)}
    assert {"layer 0", "readout", "global, pre-clip"} <= series
    assert ("global, post-clip" in series) == (threshold is not None)


def test_grad_norm_chart_with_value_clipping_says_why_no_line(runs):
    data = runs["gru"]
    data = dataclasses.replace(data, facts=lab_facts(data.config.replace(clip="value", clip_threshold=0.2)))
    s = charts.grad_norm_chart(data).to_dict()
    assert not any(label.startswith("clip threshold") for label in rule_labels(s))
    assert "clipping by value at |g| ≤ 0.2 per entry" in subtitle(s)


@pytest.mark.parametrize("run, bound", [("vanishing", 4.0), ("diverged", 1.0), ("gru", None)],
                         ids=["sigmoid", "relu", "gru"])
def test_spectral_chart_draws_one_over_gamma(runs, run, bound):
    s = spec(runs, run, "spectral_chart")
    labels = rule_labels(s)
    if bound is None:
        assert labels == {} and "vanilla RNNs only" in subtitle(s)
    else:
        assert labels == {f"1/γ = {bound:g} — below: vanishing guaranteed (Pascanu et al. 2013)": bound}


@pytest.mark.parametrize("run, baseline, label", [
    ("diverged", math.log(2), "chance (50 %): loss 0.693"),
    ("vanishing", 1 / 6, "predict 1.0 (MSE 1/6): loss 0.167")], ids=["agreement", "adding"])
def test_loss_chart_draws_the_memoryless_baseline_on_a_log_scale(runs, run, baseline, label):
    s = spec(runs, run, "loss_chart")
    (got_label, value), = rule_labels(s).items()
    assert label in got_label and value == pytest.approx(baseline, rel=1e-12)
    assert channel(s, "y")[0]["scale"] == {"type": "log"}


@pytest.mark.parametrize("run, baseline, label, log", [
    ("diverged", 0.5, "memoryless baseline: chance (50 %)", False),
    ("vanishing", 1 / 6, "memoryless baseline: predict 1.0 (MSE 1/6)", True)], ids=["accuracy", "mse"])
def test_metric_chart_draws_the_baseline_with_the_task_scale(runs, run, baseline, label, log):
    s = spec(runs, run, "metric_chart")
    assert rule_labels(s) == {label: pytest.approx(baseline, rel=1e-12)}
    y = channel(s, "y")[0]
    assert (y["scale"] == {"type": "log"}) == log
    assert log or (y["axis"] == {"format": "%"} and y["scale"] == {"domain": [0, 1]})


def test_saturation_chart_shows_hidden_units_and_gates_against_the_limit(runs):
    s = spec(runs, "gru", "saturation_chart")
    assert rule_labels(s) == {"50 % (diagnosis limit)": 0.5}
    series = {row["series"] for n in nodes(s) if mark(n) == "line" for row in rows(s, n)}
    assert series == {f"layer {k} {what}" for k in (0, 1)
                      for what in ("hidden units", "update gate (< 0.1)", "reset gate (< 0.1 or > 0.9)")}
    assert channel(s, "y")[0]["axis"] == {"format": "%"}


# --- gradient through time ------------------------------------------------------------------------------
def test_heatmap_colours_underflow_and_nonfinite_apart_from_the_log10_scale(runs):
    s = spec(runs, "vanishing", "time_grad_heatmap")
    colours = channel(s, "color")
    assert {"field": "log10", "scale": {"scheme": "viridis"}, "title": "log10 ‖∂L/∂h_t‖",
            "type": "quantitative"} in colours
    special = next(c for c in colours if c["field"] == "kind")
    assert special["scale"]["domain"] == [UNDERFLOW, NONFINITE] == ["underflow (0 in float32)", "non-finite"]
    kinds = {row["kind"] for row in all_rows(s) if "kind" in row}
    assert UNDERFLOW in kinds and "finite" in kinds
    assert all(row["log10"] is None for row in all_rows(s) if row.get("kind") == UNDERFLOW)
    assert [c["title"] for c in channel(s, "y")] == ["time step t (1 … 80)"] * 2


def test_heatmap_has_one_band_per_layer_in_one_view_and_marks_the_profiles_step(runs):
    """One view (not a concatenation, whose panels Streamlit cannot fit to a column): layer k's rows sit
    T + gap above layer k − 1's, its ticks say 1, T and the layer, and a rule marks the profile's step."""
    data = runs["gru"]
    s = spec(runs, "gru", "time_grad_heatmap")
    assert "vconcat" not in s and s["height"] == charts.HEATMAP_FRAME_PX + 2 * charts.HEATMAP_BAND_PX
    T = 7  # seq_len 5 + the subject and the verb slot
    cells = [row for row in all_rows(s) if "kind" in row]
    gap = 1
    for row in cells:
        assert row["y0"] == row["t_from"] - 0.5 + row["layer"] * (T + gap)
    axis = channel(s, "y")[0]["axis"]
    assert axis["values"] == [1, 4, 7, 9, 12, 15]
    assert 'datum.value == 4 ? "layer 0"' in axis["labelExpr"] and 'datum.value == 15 ? "7"' in axis["labelExpr"]
    [marker] = [row for row in all_rows(s) if set(row) == {"profile_step"}]
    assert marker["profile_step"] == data.profile_step == 12
    assert f"white dashed rule: step {data.profile_step}" in subtitle(s)


def test_time_profile_chart_states_gain_and_horizon_and_draws_the_fit(runs):
    data = runs["vanishing"]
    s = charts.time_profile_chart(data).to_dict()
    fit = data.time_fit
    assert 0 < fit.gain < 1 and fit.underflow_steps > 0
    assert s["title"]["subtitle"][0] == f"gain ×{fit.gain:.2f} per step · memory horizon ≈ {fit.horizon:.0f} steps"
    underflowed = int((data.time_profile["value"] == 0).sum())
    assert underflowed > 0 and f"at step {data.profile_step}" in subtitle(s)
    assert f"{underflowed} values exactly 0: drawn as ▼ on the grey band" in subtitle(s)
    floor = [row["value"] for n in nodes(s) if mark(n) == "point" for row in rows(s, n)]
    positive = [row["value"] for n in nodes(s) if mark(n) == "line" for row in rows(s, n)]
    assert len(floor) == underflowed and floor == [pytest.approx(min(positive) / 10)] * underflowed
    lines = {row["line"] for row in all_rows(s) if "line" in row}
    assert lines == {"measured", "fit ∝ gain^(T−t)"}


def test_fit_summary_without_decay_or_without_a_profile(runs):
    data = runs["gru"]
    grows = dataclasses.replace(data, time_fit=dataclasses.replace(data.time_fit, gain=1.2, horizon=None))
    assert charts.fit_summary(grows) == "gain ×1.20 per step · no decay back in time"
    assert charts.fit_summary(dataclasses.replace(data, time_fit=None)) == "no finite time profile recorded yet"


# --- readability: one palette, legends that match the marks, nothing drawn over the data ----------------
def colour_ranges(s: dict) -> dict[str, str]:
    """Every colour a spec gives a named series: name -> colour."""
    found = {}
    for c in channel(s, "color"):
        scale = c.get("scale", {})
        if "domain" in scale and "range" in scale:
            found.update(zip(scale["domain"], scale["range"]))
    return found


def test_a_series_has_one_colour_in_every_chart_and_run_and_red_means_nonfinite_only(runs):
    seen: dict[str, set[str]] = {}
    for run in RUNS:
        for builder in BUILDERS:
            for name, colour in colour_ranges(spec(runs, run, builder)).items():
                seen.setdefault(name, set()).add(colour)
    assert {"layer 0", "layer 1", "readout", "global, pre-clip", "global, post-clip"} <= set(seen)
    assert all(len(colours) == 1 for colours in seen.values()), seen
    assert seen["layer 0"] != seen["layer 1"] != seen["readout"]
    red = [name for name, colours in seen.items() if charts.EVENT_RED in colours]
    assert red == [NONFINITE]  # the heatmap's NaN/±Inf cells; event rules are red marks, not series


@pytest.mark.parametrize("builder", BUILDERS[:-2] + ["time_profile_chart"])
def test_lines_have_no_point_marks_and_their_legends_draw_strokes(runs, builder):
    s = spec(runs, "gru", builder)
    lines = [n for n in nodes(s) if mark(n) == "line"]
    assert lines and all(not isinstance(n["mark"], dict) or "point" not in n["mark"] for n in lines)
    legends = [n["encoding"][c]["legend"] for n in lines for c in ("color", "strokeDash") if c in n["encoding"]]
    assert legends and all(legend["symbolType"] == "stroke" for legend in legends)
    hover = [n for n in nodes(s) if mark(n) == "circle"]  # the tooltips' invisible points
    assert hover and all(n["mark"]["opacity"] == 0 and "tooltip" in n["encoding"] for n in hover)


@pytest.mark.parametrize("builder", BUILDERS)
def test_no_label_is_drawn_on_the_plot_and_log_axes_share_one_tick_format(runs, builder):
    s = spec(runs, "gru", builder)
    assert not [n for n in nodes(s) if mark(n) == "text"]
    log_axes = [c.get("axis") for c in channel(s, "y") if c.get("scale", {}).get("type") == "log"]
    assert all(axis == {"format": ".1~e"} for axis in log_axes)


def test_dashed_weight_quantities_are_told_apart_by_their_legend(runs):
    s = spec(runs, "gru", "weight_chart")
    dash = [n["encoding"]["strokeDash"] for n in nodes(s) if mark(n) == "line"]
    assert dash and dash[0]["field"] == "quantity" and dash[0]["legend"]["symbolType"] == "stroke"


def test_a_loss_of_exactly_zero_sits_on_the_floor_band_instead_of_vanishing(runs):
    data = runs["gru"]
    loss = data.loss.copy()
    loss.loc[loss.index[-3:], "value"] = 0.0  # as lesson 2's loss does once it fits its batch exactly
    s = charts.loss_chart(dataclasses.replace(data, loss=loss)).to_dict()
    assert "3 values exactly 0" in subtitle(s) and "not drawn" not in subtitle(s)
    floor = [row for n in nodes(s) if mark(n) == "point" for row in rows(s, n)]
    smallest = loss.loc[loss["value"] > 0, "value"].min()
    assert [row["step"] for row in floor] == loss["step"].iloc[-3:].tolist()
    assert all(row["value"] == pytest.approx(smallest / 10) for row in floor)
    band = [n for n in nodes(s) if mark(n) == "rule" and n["mark"].get("strokeWidth") == 10]
    assert len(band) == 1
