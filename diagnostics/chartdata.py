"""What the lab page's charts draw: tidy tables with at most ~2 000 points per series, from any run.

`lab_chart_data` reads a stored run through `Store.load_for_charts`, which never reads every row of a long
run; `lab_chart_data_from_memory` reduces a `RunData` in memory the same way. Both end in `_chart_data`, so
a chart looks the same whichever way its run arrived. Values keep NaN and ±Inf (they are data); the builders
in `charts` decide how to draw them.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from . import rundata as rd
from .chartfacts import ChartFacts, lab_facts, smoothing_steps, watched_facts
from .config import RunConfig
from .description import ModelDescription
from .diagnosis import MEMORY_GATES, SIGMOID_GATES
from .gradflow import TimeGradientFit, time_gradient_fit
from .rundata import RunData
from .store import (CHART_BLOCK, CHART_METRICS, CHART_RECORDED_STEPS, CHART_TENSORS, CHART_TIME_BUCKETS,
                    CHART_WHOLE_STEPS, Store)

MAX_POINTS = 2000  # per series: more than a chart is wide in pixels, few enough for the browser
FINITE, UNDERFLOW, NONFINITE = "finite", "underflow (0 in float32)", "non-finite"  # heatmap cell kinds
READOUT = "readout.weight"
GRAD_PRE_CLIP, GRAD_POST_CLIP = "global, pre-clip", "global, post-clip"
WEIGHT_QUANTITIES = {rd.WEIGHT_NORM: "‖W‖ (L2 norm)", rd.WEIGHT_MAX_ABS: "max |w|"}

SMOOTHED = "metric_smoothed"  # the chart rows' name for the smoothed training-batch metric (never stored)
_SERIES_COLUMNS = ["step", "series", "value"]
_CELL_COLUMNS = ["layer", "step", "step_end", "t_from", "t_to", "value", "log10", "kind"]


@dataclass(frozen=True)
class LabChartData:
    """Everything the lab's charts draw for one run; series frames have columns step, series, value."""

    config: RunConfig | None  # None: a watched run, recorded in a user's own loop
    facts: ChartFacts
    loss: pd.DataFrame  # step, value
    metric: pd.DataFrame  # step, value (accuracy or MSE, per the task, on each step's training batch)
    metric_smoothed: pd.DataFrame  # step, value: `metric`'s trailing mean over `smoothing_steps` steps
    heldout: pd.DataFrame  # step, value: the metric on the fixed held-out batch (`diagnostics.heldout`)
    smoothing_steps: int
    grad_norms: pd.DataFrame  # per layer, the readout, and the global norm before (and after) clipping
    weights: pd.DataFrame  # step, series, quantity (WEIGHT_QUANTITIES), value
    update_ratios: pd.DataFrame  # ‖Δw‖/‖w‖ per layer and the readout
    sigma_max: pd.DataFrame  # σ_max(W_hh) per layer
    saturation: pd.DataFrame  # hidden-unit and sigmoid-gate saturation shares per lane; also lane, part columns
    time_grad_cells: pd.DataFrame  # heatmap cells: _CELL_COLUMNS, kind is FINITE, UNDERFLOW or NONFINITE
    time_profile: pd.DataFrame  # layer, t, value: ‖∂L/∂h_t‖ at profile_step
    time_fit_line: pd.DataFrame  # t, value: the fitted gain^(T−t) line through layer 0's profile
    profile_step: int | None  # latest recorded step whose layer-0 profile is all finite
    time_fit: TimeGradientFit | None  # fit of layer 0's profile, as the diagnosis reads it
    events: pd.DataFrame  # the non-finite ledger (rundata.EVENT_COLUMNS), kind == "nonfinite"
    scrubbed: bool = False  # the profile is at a step a viewer chose, not the latest finite one


SCRUB_STEPS = 200  # a scrubber offers at most about this many recorded steps (evenly spread, first and last kept)


def at_step(data: LabChartData, rows: pd.DataFrame, step: int) -> LabChartData:
    """`data` with its gradient-through-time profile and fit at the recorded step `step` (`rows`: layer, t, value
    of that step, as `Store.time_grads_at` gives them): what the profile chart shows when a viewer scrubs to a
    step. A profile that is not all finite gets no fit."""
    profile = rows[["layer", "t", "value"]].sort_values(["layer", "t"]).reset_index(drop=True)
    fit = None if data.facts.watched else _fit_of(profile)
    return dataclasses.replace(data, time_profile=profile, time_fit_line=_fit_line(profile, fit), profile_step=step,
                               time_fit=fit, scrubbed=True)


def scrub_steps(steps: Iterable[int], keep: Iterable[int] = (), count: int = SCRUB_STEPS) -> list[int]:
    """At most ~`count` of the recorded `steps` for a scrubber, evenly spread, with the first, the last and `keep`
    (the step a viewer chose, so it stays a choice while a live run grows)."""
    steps = np.unique(np.asarray(list(steps), dtype=np.int64))
    if steps.size <= count:
        return steps.tolist()
    picked = steps[np.linspace(0, steps.size - 1, count).round().astype(int)]
    kept = [k for k in keep if k in set(steps.tolist())]
    return np.union1d(picked, np.asarray(kept, dtype=np.int64)).tolist()


def nearest_recorded(steps: list[int], step: int) -> int | None:
    """The step of `steps` (a run's recorded or kept steps) closest to `step`, the earlier on a tie; None
    without any."""
    return min(steps, key=lambda s: (abs(s - step), s)) if steps else None


# --- downsampling ---------------------------------------------------------------------------------------
def downsample(df: pd.DataFrame, max_points: int = MAX_POINTS, keep_steps: Iterable[int] = ()) -> pd.DataFrame:
    """At most ~max_points rows per series (rows alike but for step, value) that still show every spike and event."""
    # Per equal-width step bucket the min and max row; first, last, NaN/±Inf and keep_steps rows always.
    df = df.reset_index(drop=True)
    if df.empty:
        return df
    keys = [c for c in df.columns if c not in ("step", "value")]
    step = df["step"]
    by_series = df.groupby(keys, dropna=False, sort=False)["step"]
    first, last, count = (by_series.transform(how) for how in ("min", "max", "size"))
    finite = pd.Series(np.isfinite(df["value"].to_numpy(dtype=float)), index=df.index)
    keep = (count <= max_points) | ~finite | (step == first) | (step == last) | step.isin(list(keep_steps))
    bucket = (step - first) * max(1, max_points // 2) // (last - first + 1)
    pool = df.index[(count > max_points) & finite]
    by_bucket = df.loc[pool, "value"].groupby([df.loc[pool, k] for k in keys] + [bucket[pool]], dropna=False)
    keep[by_bucket.idxmin()] = True
    keep[by_bucket.idxmax()] = True
    return df[keep].reset_index(drop=True)


def thin_steps(steps: Iterable[int], extra: Iterable[int] = ()) -> np.ndarray:
    """The recorded steps a chart gets, chosen exactly as `Store.load_for_charts` chooses them, plus `extra`."""
    # Evenly spaced targets, each snapped to the next recorded step; the first and last are targets.
    steps = np.unique(np.asarray(list(steps), dtype=np.int64))
    extra = np.asarray(list(extra), dtype=np.int64)
    if not steps.size:
        return extra
    count = CHART_RECORDED_STEPS - 2
    targets = steps[0] + (steps[-1] - steps[0]) * np.arange(count) // (count - 1)
    return np.union1d(steps[np.searchsorted(steps, targets)], extra)


def profile_step(time_grads: pd.DataFrame) -> int | None:
    """The latest recorded step whose layer-0 ‖∂L/∂h_t‖ are all finite: the profile the diagnosis reads."""
    layer0 = time_grads[(time_grads["layer"] == 0).fillna(False).astype(bool)]
    finite = pd.Series(np.isfinite(layer0["value"].to_numpy(dtype=float)), index=layer0.index)
    all_finite = finite.groupby(layer0["step"]).all()
    return int(all_finite[all_finite].index.max()) if all_finite.any() else None


def _is_chart_row(metrics: pd.DataFrame) -> pd.Series:
    """The rows `Store.load_for_charts` reads: chart metrics of aggregates and the readout, and σ_max."""
    wanted = metrics["tensor"].isin(CHART_TENSORS) | (metrics["name"] == rd.SIGMA_MAX)
    return (metrics["name"].isin(CHART_METRICS) & wanted) | (metrics["name"] == rd.HELDOUT_METRIC)


def smoothed_metric(metrics: pd.DataFrame, window: int) -> pd.DataFrame:
    """The training-batch metric's mean over the last `window` steps (NaN/±Inf left out), at every step of
    `metrics` (a run's rows, every step present): step, value."""
    rows = _plain(metrics, rd.METRIC).sort_values("step")
    values = rows["value"].astype(float)
    mean = values.where(np.isfinite(values)).rolling(window, min_periods=1).mean()
    return pd.DataFrame({"step": rows["step"].to_numpy(), "value": mean.to_numpy()})


_BLOCK_MEANS: OrderedDict[tuple, pd.DataFrame] = OrderedDict()  # (store, run, created) -> its whole blocks' means
_BLOCK_MEANS_LOCK = threading.Lock()
KEEP_BLOCK_MEANS = 32


def _metric_block_means(store: Store, info) -> pd.DataFrame:
    """A long run's training-metric block means, read once per block: the blocks before the one its latest
    step is in are kept (they cannot change), so a live 100 000-step run reads only its newest rows per poll
    instead of all of them (`info`: the run's `RunInfo`)."""
    key = (str(store.path), info.id, info.created)
    with _BLOCK_MEANS_LOCK:
        known = _BLOCK_MEANS.get(key)
    whole = info.steps_done // CHART_BLOCK  # blocks 0 … whole − 1 are complete
    start = 0 if known is None or known.empty else int(known["step"].iloc[-1]) // CHART_BLOCK + 1
    fresh = store.block_means(info.id, rd.METRIC, from_step=start * CHART_BLOCK)
    blocks = fresh if known is None else pd.concat([known, fresh], ignore_index=True)
    with _BLOCK_MEANS_LOCK:
        _BLOCK_MEANS[key] = blocks[blocks["step"] // CHART_BLOCK < whole].reset_index(drop=True)
        _BLOCK_MEANS.move_to_end(key)
        while len(_BLOCK_MEANS) > KEEP_BLOCK_MEANS:
            _BLOCK_MEANS.popitem(last=False)
    return blocks


def smoothed_blocks(blocks: pd.DataFrame, window: int) -> pd.DataFrame:
    """The same from `Store.block_means` (long runs): the mean over the last whole blocks that span `window`
    steps, each block weighted by its count of finite values, at each block's last step."""
    k = max(1, round(window / CHART_BLOCK))
    total = (blocks["value"] * blocks["count"]).rolling(k, min_periods=1).sum()
    count = blocks["count"].rolling(k, min_periods=1).sum()
    return pd.DataFrame({"step": blocks["step"], "value": (total / count.where(count > 0)).to_numpy()})


# --- entry points ---------------------------------------------------------------------------------------
def lab_chart_data(store: Store, run_id: int, max_points: int = MAX_POINTS) -> LabChartData:
    """A stored run's chart data; 100 000 steps cost about twice what 1 000 do (see `Store.load_for_charts`)."""
    info = store.get_run(run_id)
    data = store.load_for_charts(run_id)
    if info.watched:  # no config: its facts come from its description and rows; it has no metric to smooth
        longest = int(data.time_grads["t"].max()) if len(data.time_grads) else 0
        facts = watched_facts(ModelDescription.from_dict(info.description), longest)
        return _chart_data(data, None, facts, max_points, pd.DataFrame(columns=["step", "value"]))
    config = RunConfig.from_dict(info.config)
    window = smoothing_steps(config)
    if info.steps_done > CHART_WHOLE_STEPS:  # its chart rows are block extremes: smooth the block means instead
        smoothed = smoothed_blocks(_metric_block_means(store, info), window)
    else:
        smoothed = smoothed_metric(data.metrics, window)
    return _chart_data(data, config, lab_facts(config), max_points, smoothed)


def lab_chart_data_from_memory(run_data: RunData, config: RunConfig, max_points: int = MAX_POINTS) -> LabChartData:
    """An in-memory run's chart data, reduced as the store reduces a stored one, so both draw alike."""
    tg, gates = run_data.time_grads, run_data.gates
    profile = profile_step(tg)
    tg_steps = thin_steps(tg["step"], [] if profile is None else [profile])
    reduced = RunData(metrics=run_data.metrics[_is_chart_row(run_data.metrics)],
                      time_grads=tg[tg["step"].isin(tg_steps)],
                      gates=gates[gates["step"].isin(thin_steps(gates["step"]))], events=run_data.events)
    facts = lab_facts(config)
    return _chart_data(reduced, config, facts, max_points, smoothed_metric(run_data.metrics, facts.smoothing_steps))


def _chart_data(data: RunData, config: RunConfig | None, facts: ChartFacts, max_points: int,
                smoothed: pd.DataFrame) -> LabChartData:
    """Split a reduced run into the tables each chart draws (`smoothed`: the smoothed training-batch metric)."""
    lanes = facts.lanes
    events = data.events[data.events["kind"] == rd.EVENT_NONFINITE].reset_index(drop=True)
    smoothed_rows = smoothed.assign(name=SMOOTHED, layer=pd.NA, tensor="")[rd.METRIC_COLUMNS]
    metrics = pd.concat([data.metrics, smoothed_rows], ignore_index=True) if len(smoothed) else data.metrics
    m = downsample(metrics, max_points, keep_steps=events["step"].unique())
    step = profile_step(data.time_grads)
    profile = _time_profile(data.time_grads, step)
    fit = None if facts.watched else _fit_of(profile)  # a watched loss may read a lane anywhere: no gain^(T−t)
    return LabChartData(
        config=config,
        facts=facts,
        loss=_plain(m, rd.LOSS),
        metric=_plain(m, rd.METRIC),
        metric_smoothed=_plain(m, SMOOTHED),
        heldout=_plain(m, rd.HELDOUT_METRIC),
        smoothing_steps=facts.smoothing_steps,
        grad_norms=_grad_norms(m, facts),
        weights=_weights(m, lanes),
        update_ratios=_by_layer(m, rd.UPDATE_RATIO, lanes),
        sigma_max=_by_layer(m, rd.SIGMA_MAX, lanes),
        saturation=pd.concat([_hidden_saturation(m, lanes), _gate_saturation(data.gates, facts)], ignore_index=True),
        time_grad_cells=time_grad_cells(data.time_grads, facts.T),
        time_profile=profile,
        time_fit_line=_fit_line(profile, fit),
        profile_step=step,
        time_fit=fit,
        events=events,
    )


# --- series ---------------------------------------------------------------------------------------------
def _rows(m: pd.DataFrame, name: str) -> pd.DataFrame:
    return m[m["name"] == name]


def _plain(m: pd.DataFrame, name: str) -> pd.DataFrame:
    """A global metric (layer NA, tensor "") as step, value."""
    return _rows(m, name)[["step", "value"]].reset_index(drop=True)


def _lane_label(rows: pd.DataFrame, lanes: tuple[str, ...]) -> pd.Series:
    """Legend names: the lane's ("layer 0", or "encoder.lstm layer 1 reverse" in a watched model), and
    "readout" for the lab's readout weight."""
    names = rows["layer"].map(dict(enumerate(lanes))).astype(object)
    unknown = "layer " + rows["layer"].astype("string").fillna("")
    return names.where(names.notna(), unknown).where(rows["tensor"] != READOUT, "readout")


def _by_layer(m: pd.DataFrame, name: str, lanes: tuple[str, ...]) -> pd.DataFrame:
    """A per-lane metric (and the readout's, where recorded) as step, series, value."""
    rows = _rows(m, name)
    return pd.DataFrame({"step": rows["step"], "series": _lane_label(rows, lanes), "value": rows["value"]},
                        columns=_SERIES_COLUMNS).reset_index(drop=True)


def _grad_norms(m: pd.DataFrame, facts: ChartFacts) -> pd.DataFrame:
    """Gradient norms per lane and of the readout, with the global norm (after clipping too when it clips)."""
    parts = [_by_layer(m, rd.GRAD_NORM, facts.lanes), _plain(m, rd.GRAD_NORM_PRE_CLIP).assign(series=GRAD_PRE_CLIP)]
    if facts.clip not in (None, "none"):  # without clipping the post-clip norm is the pre-clip one
        parts.append(_plain(m, rd.GRAD_NORM_POST_CLIP).assign(series=GRAD_POST_CLIP))
    return pd.concat(parts, ignore_index=True)[_SERIES_COLUMNS]


def _weights(m: pd.DataFrame, lanes: tuple[str, ...]) -> pd.DataFrame:
    """Weight norm and largest |w| per lane and of the readout, one quantity column."""
    parts = [_by_layer(m, name, lanes).assign(quantity=label) for name, label in WEIGHT_QUANTITIES.items()]
    return pd.concat(parts, ignore_index=True)[["step", "series", "quantity", "value"]]


HIDDEN_UNITS = "hidden units"
_SATURATION_COLUMNS = [*_SERIES_COLUMNS, "lane", "part"]


def _hidden_saturation(m: pd.DataFrame, lanes: tuple[str, ...]) -> pd.DataFrame:
    """Share of each lane's hidden units where the activation is flat, named apart from the gates."""
    rows = _by_layer(m, rd.HIDDEN_SATURATION, lanes)
    return rows.assign(series=rows["series"] + " " + HIDDEN_UNITS, lane=rows["series"], part=HIDDEN_UNITS)


def _gate_saturation(gates: pd.DataFrame, facts: ChartFacts) -> pd.DataFrame:
    """Share of each sigmoid gate's entries stuck where it passes no gradient, counted as the diagnosis counts."""
    # Near 0 or 1, but near 0 only for the memory gate (near 1 is the memory working). Each row stands for the
    # time steps up to the next row's t, so the store's t-bucketed rows weigh as much as the steps they summarise.
    # A watched model's lanes may differ in cell: each row is judged by its own lane's.
    sigmoid = np.zeros(len(gates), dtype=bool)
    for lane, cell in enumerate(facts.cells):
        sigmoid |= ((gates["layer"] == lane) & gates["gate"].isin(SIGMOID_GATES[cell])).to_numpy(dtype=bool)
    g = gates[sigmoid]
    g = g.assign(cell=g["layer"].map(dict(enumerate(facts.cells)))).sort_values(["step", "layer", "gate", "t"])
    if g.empty:
        return pd.DataFrame(columns=_SATURATION_COLUMNS)
    keys = [g["step"], g["layer"], g["gate"]]
    weight = g.groupby(keys)["t"].shift(-1).fillna(facts.T + 1) - g["t"]
    memory = g["gate"] == g["cell"].map(MEMORY_GATES)
    share = g["frac_low"] + g["frac_high"].where(~memory, 0.0)
    counted = weight.where(np.isfinite(share.to_numpy(dtype=float)), 0.0)
    per_step = (share.fillna(0.0) * counted).groupby(keys).sum() / counted.groupby(keys).sum()
    out = per_step.rename("value").reset_index()
    out_cell = out["layer"].map(dict(enumerate(facts.cells)))
    near = np.where(out["gate"] == out_cell.map(MEMORY_GATES), "< 0.1", "< 0.1 or > 0.9")
    out["lane"] = _lane_label(out.assign(tensor=""), facts.lanes)
    out["part"] = out["gate"] + " gate (" + near + ")"
    out["series"] = out["lane"] + " " + out["part"]
    return out[_SATURATION_COLUMNS]


# --- gradient through time ------------------------------------------------------------------------------
def time_grad_cells(time_grads: pd.DataFrame, T: int) -> pd.DataFrame:
    """Heatmap cells (layer, step, t-bucket) whose kind says what log10 cannot: underflow to 0, or NaN/±Inf."""
    # A cell holds the smallest finite ‖∂L/∂h_t‖ of its t-bucket (at most CHART_TIME_BUCKETS buckets).
    if time_grads.empty:
        return pd.DataFrame(columns=_CELL_COLUMNS)
    T = max(T, int(time_grads["t"].max()))
    n = min(T, CHART_TIME_BUCKETS)
    value = time_grads["value"].to_numpy(dtype=float)
    finite = np.isfinite(value)
    keys = [time_grads["layer"].astype("int64").rename("layer"), time_grads["step"],
            ((time_grads["t"] - 1) * n // T).rename("bucket")]
    cells = pd.DataFrame({"value": np.where(finite, value, np.nan), "bad": ~finite}, index=time_grads.index)
    cells = cells.groupby(keys).agg(value=("value", "min"), bad=("bad", "any")).reset_index()
    cells["kind"] = np.select([cells["bad"], cells["value"] == 0], [NONFINITE, UNDERFLOW], FINITE)
    cells["value"] = cells["value"].where(~cells["bad"])
    cells["log10"] = np.log10(cells["value"].where(cells["kind"] == FINITE))
    cells["t_from"] = -(-cells["bucket"] * T // n) + 1
    cells["t_to"] = -(-(cells["bucket"] + 1) * T // n)
    cells["step_end"] = cells["step"].map(_step_ends(cells["step"]))
    return cells[_CELL_COLUMNS]


def _step_ends(steps: pd.Series) -> pd.Series:
    """Where each step's heatmap column ends (at the next recorded step), so columns leave no gaps."""
    s = np.unique(steps.to_numpy())
    last_width = s[-1] - s[-2] if s.size > 1 else 1
    return pd.Series(np.append(s[1:], s[-1] + last_width), index=s)


def _time_profile(time_grads: pd.DataFrame, step: int | None) -> pd.DataFrame:
    """‖∂L/∂h_t‖ over t at `step`, per layer."""
    rows = time_grads[time_grads["step"] == step].sort_values(["layer", "t"])
    return rows[["layer", "t", "value"]].astype({"layer": "int64"}).reset_index(drop=True)


def _fit_of(profile: pd.DataFrame) -> TimeGradientFit | None:
    """The fit of layer 0's profile, as the diagnosis reads it; None without a profile or with NaN/Inf in it."""
    layer0 = profile.loc[profile["layer"] == 0, "value"]
    if not len(layer0) or not np.isfinite(layer0.to_numpy(dtype=float)).all():
        return None
    return time_gradient_fit(layer0)


def _fit_line(profile: pd.DataFrame, fit: TimeGradientFit | None) -> pd.DataFrame:
    """The least-squares line of `time_gradient_fit` (∝ gain^(T−t)) over the time steps it was fitted on."""
    layer0 = profile[profile["layer"] == 0]
    t, p = layer0["t"].to_numpy(), layer0["value"].to_numpy(dtype=float)
    used = np.isfinite(p) & (p > 0)  # extrapolated into underflow, the line would swamp the y axis
    if fit is None or fit.gain is None or not used.any():
        return pd.DataFrame({"t": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64")})
    intercept = np.mean(np.log(p[used]) + t[used] * np.log(fit.gain))  # polyfit's intercept for this slope
    return pd.DataFrame({"t": t[used], "value": np.exp(intercept - t[used] * np.log(fit.gain))})
