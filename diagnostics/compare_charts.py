"""Up to four runs overlaid on shared axes: every quantity the lab charts, and the gradient through time at a step.

The series come from each run's `LabChartData` (read once per stored state for every page, see `chartcache`),
so a compared curve is the lab's own curve; colours follow the runs (no red: red means NaN/Inf), and where a
quantity has several series per run (layers, the readout) the dash pattern tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import altair as alt
import numpy as np
import pandas as pd

from . import rundata as rd
from .chartdata import (GRAD_POST_CLIP, GRAD_PRE_CLIP, SMOOTHED, WEIGHT_QUANTITIES, LabChartData, downsample,
                        nearest_recorded)
from .charts import LOG_AXIS
from .palette import ordered_scale
from .store import Store

TIME_PROFILE = "time_profile"  # the gradient back through time at a chosen step, not a series over training


@dataclass(frozen=True)
class Quantity:
    """One overlaid chart: its axis title, whether it spans decades, and its rows (step, series, value) in a
    run's chart data; None: a global metric the lab does not chart, read from the store (`Store.global_series`)."""

    name: str  # in the chart's title
    title: str  # what the chart picker lists
    log: bool
    rows: Callable[[LabChartData], pd.DataFrame] | None
    axis: str  # the y axis's title: short, since a title longer than the plot is tall pushes the chart's title out


def _one(frame: pd.DataFrame, series: str) -> pd.DataFrame:
    return frame.assign(series=series)[["step", "series", "value"]]


def _where(frame: pd.DataFrame, column: str, keep) -> pd.DataFrame:
    return frame[frame[column].isin(keep)][["step", "series", "value"]]


def _post_clip(data: LabChartData) -> pd.DataFrame:
    """After clipping; a run that does not clip has no such series, and its norm after is its norm before."""
    norms = data.grad_norms
    post = norms[norms["series"] == GRAD_POST_CLIP]
    return _one(post if len(post) else norms[norms["series"] == GRAD_PRE_CLIP], "global")


def _per_layer(data: LabChartData) -> pd.DataFrame:
    return data.grad_norms[~data.grad_norms["series"].isin([GRAD_PRE_CLIP, GRAD_POST_CLIP])]


def _weights(quantity: str) -> Callable[[LabChartData], pd.DataFrame]:
    return lambda data: _where(data.weights, "quantity", [WEIGHT_QUANTITIES[quantity]])


def _hidden_saturation(data: LabChartData) -> pd.DataFrame:
    rows = data.saturation
    return rows[rows["series"].str.endswith(" hidden units")][["step", "series", "value"]]


METRIC_AXIS = "(accuracy or MSE)"
LOG = "(log scale)"
QUANTITIES = {
    rd.LOSS: Quantity("loss", f"task loss {LOG}", True, lambda d: _one(d.loss, "loss"), f"loss {LOG}"),
    rd.METRIC: Quantity("training-batch metric", f"training-batch metric {METRIC_AXIS}", False,
                        lambda d: _one(d.metric, "training batch"), "accuracy or MSE"),
    SMOOTHED: Quantity("smoothed training-batch metric", f"training-batch metric, trailing mean {METRIC_AXIS}",
                       False, lambda d: _one(d.metric_smoothed, f"mean of {d.smoothing_steps} steps"),
                       "accuracy or MSE, trailing mean"),
    rd.HELDOUT_METRIC: Quantity("held-out metric", f"held-out metric {METRIC_AXIS}", False,
                                lambda d: _one(d.heldout, "held-out"), "held-out accuracy or MSE"),
    rd.GRAD_NORM_PRE_CLIP: Quantity(
        "gradient norm before clipping", f"global gradient norm before clipping (L2) {LOG}", True,
        lambda d: _one(_where(d.grad_norms, "series", [GRAD_PRE_CLIP]), "global"), f"‖∇‖ before clipping {LOG}"),
    rd.GRAD_NORM_POST_CLIP: Quantity(
        "gradient norm after clipping", f"global gradient norm after clipping (L2) {LOG}", True, _post_clip,
        f"‖∇‖ after clipping {LOG}"),
    rd.GRAD_NORM: Quantity("gradient norm per layer", f"gradient norm per layer (L2) {LOG}", True, _per_layer,
                           f"‖∇‖ per layer {LOG}"),
    rd.WEIGHT_NORM: Quantity("weight norm ‖W‖", f"weight norm ‖W‖ per layer (L2) {LOG}", True,
                             _weights(rd.WEIGHT_NORM), f"‖W‖ {LOG}"),
    rd.WEIGHT_MAX_ABS: Quantity("max |w|", f"largest weight max |w| per layer {LOG}", True,
                                _weights(rd.WEIGHT_MAX_ABS), f"max |w| {LOG}"),
    rd.UPDATE_RATIO: Quantity("update ratio", f"update ratio ‖Δw‖/‖w‖ per layer {LOG}", True,
                              lambda d: d.update_ratios, f"‖Δw‖/‖w‖ {LOG}"),
    rd.SIGMA_MAX: Quantity("σ_max(W_hh)", f"σ_max(W_hh), largest singular value per layer {LOG}", True,
                           lambda d: d.sigma_max, f"σ_max(W_hh) {LOG}"),
    rd.HIDDEN_SATURATION: Quantity("saturated hidden units", "share of saturated hidden units per layer (0–1)",
                                   False, _hidden_saturation, "share saturated (0–1)"),
    rd.PENALTY: Quantity("L2 weight penalty", "L2 weight penalty", False, None, "L2 penalty"),
}
SERIES_OVER_TRAINING = tuple(QUANTITIES)
CHOICES = (*SERIES_OVER_TRAINING, TIME_PROFILE)
LABELS = {**{name: q.title for name, q in QUANTITIES.items()},
          TIME_PROFILE: "gradient back through time ‖∂L/∂h_t‖ at a chosen training step"}


def compare_series(store: Store, data: dict[str, LabChartData], run_ids: dict[str, int],
                   quantity: str, max_points: int = 2000) -> pd.DataFrame:
    """One quantity of each run (`data`: label → its chart data; `run_ids`: label → run id) as run, series,
    step, value rows."""
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity={quantity!r} is not valid; allowed: {', '.join(QUANTITIES)}")
    frames = []
    q = QUANTITIES[quantity]
    for label, chart_data in data.items():
        if q.rows is None:
            rows = store.global_series(run_ids[label], quantity).assign(series=quantity)
        else:
            rows = q.rows(chart_data)
        frames.append(downsample(rows[["step", "series", "value"]].assign(run=label), max_points))
    columns = ["run", "series", "step", "value"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def _hidden_note(values: pd.Series, log: bool) -> tuple[np.ndarray, list[str]]:
    """Which values a scale can draw, and the subtitle counting the others."""
    values = values.astype(float)
    drawable = np.isfinite(values) & ((values > 0) if log else True)
    hidden = int((~drawable).sum())
    cannot = "0, NaN or ±Inf, which a log scale cannot show" if log else "NaN or ±Inf"
    return drawable.to_numpy(), [f"{hidden} value{'s' * (hidden != 1)} not drawn: {cannot}"] if hidden else []


def _legend() -> alt.Legend:
    """At the side: Streamlit keeps a chart's height, so a legend below it squeezes the plot to a sliver."""
    return alt.Legend(labelLimit=360, symbolType="stroke", symbolStrokeWidth=2)


def compare_chart(df: pd.DataFrame, quantity: str, runs: list[str] | None = None,
                  what: str = "the compared runs") -> alt.Chart:
    """The runs overlaid on shared axes, colour by run and dash by series (layer) where a run has several;
    what a scale cannot show (NaN, ±Inf, and ≤ 0 on a log scale) is left out and counted in the subtitle.
    `runs`: every run's label, so each keeps its colour (and the spec stays the same) before it has rows;
    `what`: the title's name for them."""
    q = QUANTITIES[quantity]
    drawable, subtitle = _hidden_note(df["value"], q.log)
    several = df.groupby("run")["series"].nunique().max() > 1 if len(df) else False
    y = alt.Y("value:Q", title=q.axis, scale=alt.Scale(type="log") if q.log else alt.Undefined,
              axis=LOG_AXIS if q.log else alt.Undefined)
    extra = {"strokeDash": alt.StrokeDash("series:N", title="series", legend=_legend())} if several else {}
    return (alt.Chart(df[drawable], title=alt.TitleParams(f"{q.name} of {what}",
                                                          subtitle=subtitle, anchor="start"))
            .mark_line(clip=True)
            .encode(x=alt.X("step:Q", title="training step", axis=alt.Axis(format="d", tickMinStep=1)), y=y,
                    color=alt.Color("run:N", title="run", scale=ordered_scale(df["run"] if runs is None else runs),
                                    legend=_legend()),
                    tooltip=["run:N", "series:N", "step:Q", alt.Tooltip("value:Q", format=".4g")], **extra))


def compare_profiles(store: Store, run_ids: dict[str, int], step: int) -> pd.DataFrame:
    """Each run's layer-0 ‖∂L/∂h_t‖ at its recorded step nearest `step`: run (its label and that step), t, value."""
    frames = []
    for label, run_id in run_ids.items():
        at = nearest_recorded(store.recorded_steps(run_id), step)
        if at is None:
            continue
        rows = store.time_grads_at(run_id, at)
        frames.append(rows[rows["layer"] == 0][["t", "value"]].assign(run=f"{label} (step {at})"))
    columns = ["run", "t", "value"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def compare_profile_chart(df: pd.DataFrame, step: int) -> alt.Chart:
    """The runs' gradient profiles over time steps on one log axis: where one falls faster, it forgets sooner."""
    drawable, subtitle = _hidden_note(df["value"], log=True)
    return (alt.Chart(df[drawable], title=alt.TitleParams(
                f"gradient back through time at training step {step} (layer 0)",
                subtitle=subtitle + ["each run at its recorded step nearest the chosen one (in its label)"],
                anchor="start"))
            .mark_line(clip=True)
            .encode(x=alt.X("t:Q", title="time step t (the loss is at the last)"),
                    y=alt.Y("value:Q", title="‖∂L/∂h_t‖ (L2 norm, log scale)", scale=alt.Scale(type="log"),
                            axis=LOG_AXIS),
                    color=alt.Color("run:N", title="run", scale=ordered_scale(df["run"]), legend=_legend()),
                    tooltip=["run:N", "t:Q", alt.Tooltip("value:Q", format=".4g")]))
