"""Altair charts of one run's gradient flow, built from `LabChartData` alone: pure, no I/O, no Streamlit.

Every chart has a title, axis titles with units or scale, and tooltips; every chart over training steps
draws a red rule at each step where a tensor went NaN/±Inf. A log scale cannot show 0, NaN or ±Inf, so such
points are left out and the subtitle counts them: a gap in a line is never silent. Rows go in as DataFrames,
which Streamlit sends as Arrow; outside Streamlit a chart of several 2 000-point series (`chartdata` caps each)
needs `alt.data_transformers.disable_max_rows()` before `to_dict()` or `save()`.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from .chartdata import FINITE, NONFINITE, UNDERFLOW, LabChartData
from .diagnosis import GRAD_LIMIT, SATURATION_LIMIT
from .gradflow import vanishing_bound
from .model import task_of

STEP = "training step"
EVENT_RED = "#d62728"
UNDERFLOW_GREY = "#bdbdbd"
RULE_GREY = "#555555"
GRAD_LIMIT_LABEL = f"{GRAD_LIMIT:.1f} (exploding threshold)"
SPECIAL_CELLS = {UNDERFLOW: UNDERFLOW_GREY, NONFINITE: EVENT_RED}  # heatmap cells that have no log10
LOG = alt.Scale(type="log")
BOTTOM = alt.Legend(orient="bottom")  # the heatmap's legends: at the side they would be cut off in a column


# --- building blocks ------------------------------------------------------------------------------------
def _data(df: pd.DataFrame) -> pd.DataFrame:
    """The rows as a frame, not a list of records: Altair deep-copies records at every layer and `properties`
    call (4.5 s for the lab's charts of a 1 000-step LSTM run at T=200, against 0.8 s as frames); Streamlit
    sends frames to the browser as Arrow, NaN and ±Inf included."""
    return df.reset_index(drop=True)


def _drawable(df: pd.DataFrame, log: bool) -> tuple[pd.DataFrame, int]:
    """The rows a scale can place (finite, and positive on a log scale) and how many were left out."""
    value = df["value"].to_numpy(dtype=float)
    ok = np.isfinite(value) & ((value > 0) if log else True)
    return df[ok], int((~ok).sum())


def _left_out(count: int, log: bool) -> str:
    """The subtitle line that owns up to the points a chart could not draw."""
    if not count:
        return ""
    what = "0, NaN or ±Inf, which a log scale cannot show" if log else "NaN or ±Inf"
    return f"{count} value{'s' * (count != 1)} not drawn: {what}"


def _title(text: str, *subtitle: str) -> alt.TitleParams:
    """A title with the non-empty subtitle lines, which say what the chart leaves out or marks."""
    return alt.TitleParams(text, subtitle=[line for line in subtitle if line], anchor="start")


def _step_x() -> alt.X:
    """The training-step axis every chart over training shares (rules and lines on one scale)."""
    return alt.X("step:Q", title=STEP, scale=alt.Scale(zero=False, nice=False),  # the axis ends where the run does
                 axis=alt.Axis(format="d", tickMinStep=1))


def _lines(df: pd.DataFrame, y: alt.Y, y_title: str, dash: str | None = None) -> alt.Chart:
    """One line per series over training steps, with points that carry the tooltip."""
    extra = {} if dash is None else {"strokeDash": alt.StrokeDash(f"{dash}:N", title=dash)}
    tooltip = [alt.Tooltip("step:Q", title=STEP), alt.Tooltip("series:N", title="series"),
               *([alt.Tooltip(f"{dash}:N", title=dash)] if dash else []),
               alt.Tooltip("value:Q", title=y_title, format=".4g")]
    return (alt.Chart(_data(df)).mark_line(point=alt.OverlayMarkDef(size=16), clip=True)
            .encode(x=_step_x(), y=y, tooltip=tooltip, **extra,
                    color=alt.Color("series:N", title="series", legend=alt.Legend(labelLimit=320))))


def _rule(value: float, label: str, color: str = RULE_GREY, dy: int = -6) -> alt.LayerChart:
    """A labelled horizontal line at `value` (a threshold or a baseline)."""
    base = alt.Chart(_data(pd.DataFrame({"value": [value], "label": [label]})))
    rule = base.mark_rule(color=color, strokeDash=[6, 4]).encode(
        y="value:Q", tooltip=[alt.Tooltip("label:N", title="line"), alt.Tooltip("value:Q", format=".4g")])
    text = base.mark_text(align="left", dx=4, dy=dy, color=color).encode(x=alt.value(0), y="value:Q",
                                                                         text="label:N")
    return rule + text


def _event_rules(events: pd.DataFrame) -> list[alt.Chart]:
    """A red rule at each step where a tensor went NaN/±Inf (none: no layer); the tooltip names the first one."""
    if events.empty:
        return []
    first = events.drop_duplicates("step")[["step", "tensor", "layer", "time_step"]]
    tensors = events.groupby("step")["tensor"]
    per_step = first.assign(count=first["step"].map(tensors.size()), tensors=first["step"].map(tensors.agg(", ".join)))
    tooltip = [alt.Tooltip("step:Q", title="non-finite at step"), alt.Tooltip("tensor:N", title="tensor"),
               alt.Tooltip("layer:Q", title="layer"), alt.Tooltip("time_step:Q", title="time step"),
               alt.Tooltip("count:Q", title="non-finite tensors"), alt.Tooltip("tensors:N", title="all")]
    return [alt.Chart(_data(per_step)).mark_rule(color=EVENT_RED, strokeWidth=2).encode(
        x=_step_x(), tooltip=tooltip)]


def _events_note(events: pd.DataFrame) -> str:
    """The subtitle line that explains the red rules, when there are any."""
    if events.empty:
        return ""
    return f"red rules: steps where a tensor became NaN/±Inf (first at step {events['step'].min()})"


def _series_chart(title: str, df: pd.DataFrame, y_title: str, events: pd.DataFrame, rules=(), log: bool = True,
                  dash: str | None = None, notes=()) -> alt.LayerChart:
    """Lines over training steps (log scale, else shares 0–100 %) with rules and a subtitle of what is missing."""
    drawn, hidden = _drawable(df, log)
    y = (alt.Y("value:Q", title=y_title, scale=LOG) if log
         else alt.Y("value:Q", title=y_title, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")))
    layers = [_lines(drawn, y, y_title, dash), *rules, *_event_rules(events)]
    return alt.layer(*layers).properties(title=_title(title, *notes, _left_out(hidden, log), _events_note(events)))


# --- training curves ------------------------------------------------------------------------------------
def loss_chart(data: LabChartData) -> alt.LayerChart:
    """The loss against a memoryless model's: staying on that line means no gradient crossed the distance."""
    task = task_of(data.config)
    label = f"memoryless baseline, {task.baseline_label}: loss {task.baseline_loss:.3g}"
    return _series_chart("Training loss", data.loss.assign(series="loss"), f"loss ({task.loss_name}, log scale)",
                         data.events, rules=[_rule(task.baseline_loss, label)],
                         notes=["dashed: the loss of a model that ignores the long-range dependency"])


def metric_chart(data: LabChartData) -> alt.LayerChart:
    """Accuracy (linear, 0–100 %) or MSE (log scale) against the memoryless baseline."""
    task = task_of(data.config)
    log = not task.higher_is_better  # accuracy is a share; an MSE spans decades
    y_title = f"{task.metric_name} (log scale)" if log else f"{task.metric_name} (share correct, 0–100 %)"
    return _series_chart(f"Training {task.metric_name}", data.metric.assign(series=task.metric_name), y_title,
                         data.events, rules=[_rule(task.baseline, f"memoryless baseline: {task.baseline_label}")],
                         log=log, notes=["on the training batch of each step"])


# --- gradients and weights ------------------------------------------------------------------------------
def grad_norm_chart(data: LabChartData) -> alt.LayerChart:
    """Gradient norms per layer, of the readout and globally, against the exploding line and the clip line."""
    config = data.config
    rules = [_rule(GRAD_LIMIT, GRAD_LIMIT_LABEL)]
    notes = ["pre-clip norms per layer and of the readout weight"]
    if config.clip == "norm":
        rules.append(_rule(config.clip_threshold, f"clip threshold {config.clip_threshold:g} (global norm)",
                           color="#1f77b4", dy=12))
    elif config.clip == "value":
        notes.append(f"clipping by value at |g| ≤ {config.clip_threshold:g} per entry (no norm line to draw)")
    return _series_chart("Gradient norms", data.grad_norms, "‖∇‖ (L2 norm, log scale)", data.events,
                         rules=rules, notes=notes)


def weight_chart(data: LabChartData) -> alt.LayerChart:
    """Weight norm and largest |w| per layer: exponential growth here is what makes gradients explode."""
    return _series_chart("Weights", data.weights, "weight magnitude (log scale)", data.events, dash="quantity",
                         notes=["solid and dashed: ‖W‖ (L2 norm) and max |w| after each step"])


def update_ratio_chart(data: LabChartData) -> alt.LayerChart:
    """How far each step moves the weights relative to their size (Δw norm over w norm)."""
    return _series_chart("Update ratio", data.update_ratios, "‖Δw‖ / ‖w‖ per step (log scale)", data.events,
                         notes=["per layer and of the readout weight"])


def spectral_chart(data: LabChartData) -> alt.LayerChart:
    """σ_max(W_hh) per layer; for a vanilla RNN below 1/γ the gradient must vanish (Pascanu et al. 2013).
    The y title stays short: one taller than the plot hides the chart's title in Vega."""
    config = data.config
    rules, notes = [], ["largest singular value of each layer's recurrent matrix, on recorded steps"]
    if config.cell == "rnn":
        bound = vanishing_bound(config.activation)
        rules.append(_rule(bound, f"1/γ = {bound:g} — below: vanishing guaranteed (Pascanu et al. 2013)"))
    else:
        notes.append("the 1/γ vanishing bound holds for vanilla RNNs only")
    return _series_chart("Recurrent matrix σ_max(W_hh)", data.sigma_max,
                         "σ_max(W_hh) (log scale)", data.events, rules=rules, notes=notes)


def saturation_chart(data: LabChartData) -> alt.LayerChart:
    """Shares of saturated hidden units and gate entries: a saturated unit passes almost no gradient back."""
    return _series_chart("Saturation", data.saturation, "share saturated (0–100 %)", data.events,
                         rules=[_rule(SATURATION_LIMIT, f"{SATURATION_LIMIT * 100:g} % (diagnosis limit)")], log=False,
                         notes=["hidden units where the activation is flat; sigmoid gates stuck near 0 or 1"])


# --- gradient through time ------------------------------------------------------------------------------
def time_grad_heatmap(data: LabChartData) -> alt.VConcatChart:
    """‖∂L/∂h_t‖ per recorded step and time step, per layer; 0 and NaN/±Inf get own colours (no log10)."""
    cells = data.time_grad_cells
    T = task_of(data.config).total_steps()
    layers = sorted(cells["layer"].unique()) if not cells.empty else [0]
    panels = [_heatmap_panel(cells[cells["layer"] == k], k, T, data.events) for k in layers]
    per_row = int((cells["t_to"] - cells["t_from"]).max()) + 1 if not cells.empty else 1
    notes = ["colour: log10 of the smallest ‖∂L/∂h_t‖ in the cell (L2 norm over batch and units)",
             f"grey: {UNDERFLOW}; red cells: {NONFINITE} (NaN/±Inf)",
             f"each row covers up to {per_row} time steps" if per_row > 1 else "",
             "" if not cells.empty else "no per-time-step gradients recorded yet", _events_note(data.events)]
    return alt.vconcat(*panels, title=_title("Gradient reaching each time step, over training", *notes))


def _heatmap_panel(cells: pd.DataFrame, layer: int, T: int, events: pd.DataFrame) -> alt.LayerChart:
    """One layer's heatmap: finite cells on a sequential log10 scale, underflow and non-finite cells apart."""
    cells = cells.assign(y0=cells["t_from"] - 0.5, y1=cells["t_to"] + 0.5,
                         t=np.where(cells["t_from"] == cells["t_to"], cells["t_from"].astype(str),
                                    cells["t_from"].astype(str) + "–" + cells["t_to"].astype(str)))
    x = _step_x()
    y = alt.Y("y0:Q", title=f"time step t (1 … {T})", scale=alt.Scale(domain=[0.5, T + 0.5], nice=False))
    tooltip = [alt.Tooltip("step:Q", title=STEP), alt.Tooltip("t:N", title="time step t"),
               alt.Tooltip("value:Q", title="smallest ‖∂L/∂h_t‖", format=".3g"), alt.Tooltip("kind:N")]
    finite = alt.Chart(_data(cells[cells["kind"] == FINITE])).mark_rect().encode(
        x=x, x2="step_end:Q", y=y, y2="y1:Q", tooltip=tooltip,
        color=alt.Color("log10:Q", title="log10 ‖∂L/∂h_t‖", scale=alt.Scale(scheme="viridis"), legend=BOTTOM))
    special = alt.Chart(_data(cells[cells["kind"] != FINITE])).mark_rect().encode(
        x=x, x2="step_end:Q", y=y, y2="y1:Q", tooltip=tooltip,
        color=alt.Color("kind:N", title="no log10", legend=BOTTOM,
                        scale=alt.Scale(domain=list(SPECIAL_CELLS), range=list(SPECIAL_CELLS.values()))))
    return (alt.layer(finite, special, *_event_rules(events)).resolve_scale(color="independent")
            .properties(title=f"layer {layer}", height=220))


def time_profile_chart(data: LabChartData) -> alt.Chart:
    """The latest finite ‖∂L/∂h_t‖ over t and its fit gain^(T−t): how far back the network can learn."""
    T = task_of(data.config).total_steps()
    profile = data.time_profile.assign(series="layer " + data.time_profile["layer"].astype(str), line="measured")
    fit = data.time_fit_line.assign(series="layer 0", line="fit ∝ gain^(T−t)")
    drawn, hidden = _drawable(pd.concat([profile, fit], ignore_index=True), log=True)
    y_title = "‖∂L/∂h_t‖ (L2 norm, log scale)"
    chart = alt.Chart(_data(drawn)).mark_line(point=True).encode(
        x=alt.X("t:Q", title=f"time step t (1 … {T})", scale=alt.Scale(domain=[1, T])),
        y=alt.Y("value:Q", title=y_title, scale=LOG), color=alt.Color("series:N", title="series"),
        strokeDash=alt.StrokeDash("line:N", title="line"),
        tooltip=[alt.Tooltip("series:N"), alt.Tooltip("line:N"), alt.Tooltip("t:Q", title="time step t"),
                 alt.Tooltip("value:Q", title=y_title, format=".3g")])
    where = f"at step {data.profile_step}, the latest with a finite profile" if data.profile_step else ""
    return chart.properties(title=_title("Gradient back through time", fit_summary(data), where,
                                         _left_out(hidden, log=True)))


def fit_summary(data: LabChartData) -> str:
    """The profile's fit in words: "gain ×0.74 per step · memory horizon ≈ 23 steps"."""
    fit = data.time_fit
    if fit is None:
        return "no finite time profile recorded yet"
    if fit.gain is None:
        return "too few positive values to fit a gain"
    if fit.horizon is None:
        return f"gain ×{fit.gain:.2f} per step · no decay back in time"
    return f"gain ×{fit.gain:.2f} per step · memory horizon ≈ {fit.horizon:.0f} steps"


# The lab's charts in rows: two side by side, or one at full width (the heatmap needs it).
LAB_CHART_ROWS = ((loss_chart, metric_chart), (grad_norm_chart, time_profile_chart), (time_grad_heatmap,),
                  (weight_chart, update_ratio_chart), (spectral_chart, saturation_chart))
