"""Altair charts of one run's gradient flow, built from `LabChartData` alone: pure, no I/O, no Streamlit.

Every chart has a title, axis titles with units or scale, and tooltips; every chart over training steps
draws a red rule at each step where a tensor went NaN/±Inf, and red means nothing else (`palette`). A log scale
cannot show NaN or ±Inf, so such points are left out and the subtitle counts them: a gap in a line is never
silent; it has no 0 either, so exact zeros sit on a grey floor band below the smallest value. Lines carry no
per-point marks (invisible points carry the tooltips), so a dashed line looks dashed and its legend symbol is a
stroke of the same dash. Threshold lines are explained in the subtitle rather than labelled on the plot, where a
label would cover data. Rows go in as DataFrames,
which Streamlit sends as Arrow; outside Streamlit a chart of several 2 000-point series (`chartdata` caps each)
needs `alt.data_transformers.disable_max_rows()` before `to_dict()` or `save()`.
"""

from __future__ import annotations

import json

import altair as alt
import numpy as np
import pandas as pd

from .chartdata import FINITE, NONFINITE, UNDERFLOW, LabChartData
from .diagnosis import GRAD_LIMIT, SATURATION_LIMIT, share_text
from .gradflow import VANISHED, vanishing_bound
from .heldout import EVAL_BATCH
from .palette import NONFINITE_RED, series_scale
from .watched_verdict import lane_reach

STEP = "training step"
EVENT_RED = NONFINITE_RED
UNDERFLOW_GREY = "#bdbdbd"
GRAD_LIMIT_LABEL = f"{GRAD_LIMIT:.1f} (exploding threshold)"
SPECIAL_CELLS = {UNDERFLOW: UNDERFLOW_GREY, NONFINITE: EVENT_RED}  # heatmap cells that have no log10
LOG = alt.Scale(type="log")
LOG_AXIS = alt.Axis(format=".1~e")  # one tick format on every log axis: 3e-7 … 2e+1, never 0.000002 beside 3e-7
ZERO_FLOOR_DECADES = 1.0  # exact zeros are drawn this many decades below the smallest positive value
# Threshold and baseline lines: how each is drawn, and the words the subtitle uses for it.
LINE_STYLES = {"threshold": ("#555555", [6, 4], "grey dashed line"), "clip": ("#000000", [2, 3], "black dotted line")}


# --- building blocks ------------------------------------------------------------------------------------
def _data(df: pd.DataFrame) -> pd.DataFrame:
    """The rows as a frame, not a list of records: Altair deep-copies records at every layer and `properties`
    call (4.5 s for the lab's charts of a 1 000-step LSTM run at T=200, against 0.8 s as frames); Streamlit
    sends frames to the browser as Arrow, NaN and ±Inf included."""
    return df.reset_index(drop=True)


def _drawable(df: pd.DataFrame, log: bool) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The rows a scale can place (finite, and positive on a log scale), the exact zeros of a log scale moved to
    its floor band, and how many rows (NaN, ±Inf, negative on a log scale) were left out."""
    value = df["value"].to_numpy(dtype=float)
    finite = np.isfinite(value)
    ok = finite & ((value > 0) if log else True)
    zero = finite & (value == 0) if log else np.zeros(len(df), dtype=bool)
    drawn = df[ok]
    floor = _zero_floor(drawn["value"]) if zero.any() else None
    zeros = df[zero].assign(value=floor, shown="0 (on the floor band)") if zero.any() else df.iloc[:0]
    return drawn, zeros, int((~ok & ~zero).sum())


def _zero_floor(positive: pd.Series) -> float:
    """Where a log axis draws exact zeros: a decade below its smallest positive value (1e-12 without one)."""
    smallest = float(positive.min()) if len(positive) else 10 * 1e-12
    return smallest / 10 ** ZERO_FLOOR_DECADES


def _left_out(count: int, log: bool) -> str:
    """The subtitle line that owns up to the points a chart could not draw."""
    if not count:
        return ""
    what = "NaN, ±Inf or below 0, which a log scale cannot show" if log else "NaN or ±Inf"
    return f"{count} value{'s' * (count != 1)} not drawn: {what}"


def _zeros_note(zeros: pd.DataFrame) -> str:
    if zeros.empty:
        return ""
    return (f"{len(zeros)} value{'s' * (len(zeros) != 1)} exactly 0: drawn as ▼ on the grey band at the bottom "
            "(a log scale has no 0)")


def _title(text: str, *subtitle: str) -> alt.TitleParams:
    """A title with the non-empty subtitle lines, which say what the chart leaves out or marks."""
    return alt.TitleParams(text, subtitle=[line for line in subtitle if line], anchor="start")


STEP_TIP = alt.Tooltip("step:Q", title=STEP)


def _step_x() -> alt.X:
    """The training-step axis every chart over training shares (rules and lines on one scale)."""
    return alt.X("step:Q", title=STEP, scale=alt.Scale(zero=False, nice=False),  # the axis ends where the run does
                 axis=alt.Axis(format="d", tickMinStep=1))


def _lines(df: pd.DataFrame, x: alt.X, x_tip: alt.Tooltip, y: alt.Y, y_title: str, dash: str | None = None,
           colour: str = "series", zeros: pd.DataFrame | None = None, hide: str | None = None) -> list[alt.Chart]:
    """One line per series (colour by name, `dash` pattern by a second field), invisible points that carry the
    tooltip, and the exact zeros of a log scale as ▼ on its floor band; `hide`: a Vega expression that keeps
    the rows to draw (e.g. by a checkbox the chart binds)."""
    scale = series_scale(pd.concat([df[colour], zeros[colour]]) if zeros is not None else df[colour])
    legend = alt.Legend(labelLimit=320, symbolType="stroke", symbolStrokeWidth=2)
    extra = {} if dash is None else {"strokeDash": alt.StrokeDash(f"{dash}:N", title=dash, legend=legend)}
    tooltip = [x_tip, alt.Tooltip(f"{colour}:N", title="series" if colour == "series" else colour),
               *([alt.Tooltip(f"{dash}:N", title=dash)] if dash else []),
               alt.Tooltip("value:Q", title=y_title, format=".4g")]
    base = alt.Chart(_data(df)).encode(x=x, y=y)
    if hide is not None:
        base = base.transform_filter(hide)
    layers = [base.mark_line(clip=True, strokeWidth=1.5).encode(
                  color=alt.Color(f"{colour}:N", title="series" if colour == "series" else colour, scale=scale,
                                  legend=legend), **extra),
              base.mark_circle(size=40, opacity=0, clip=True).encode(
                  color=alt.Color(f"{colour}:N", scale=scale, legend=None), tooltip=tooltip)]
    if zeros is not None and not zeros.empty:
        floor = float(zeros["value"].iloc[0])
        band = alt.Chart(_data(pd.DataFrame({"value": [floor], "label": ["0 (a log scale has no 0)"]})))
        layers += [band.mark_rule(color="#999999", strokeWidth=10, opacity=0.3).encode(
                       y="value:Q", tooltip=[alt.Tooltip("label:N", title="band")]),
                   alt.Chart(_data(zeros)).mark_point(shape="triangle-down", filled=True, size=30, clip=True).encode(
                       x=x, y=y, color=alt.Color(f"{colour}:N", scale=scale, legend=None),
                       tooltip=[*tooltip[:-1], alt.Tooltip("shown:N", title=y_title)])]
    return layers


def _rule(value: float, label: str, style: str = "threshold") -> alt.Chart:
    """A horizontal line at `value` (a threshold or a baseline); `_rule_note` explains it in the subtitle."""
    color, dash, _ = LINE_STYLES[style]
    return alt.Chart(_data(pd.DataFrame({"value": [value], "label": [label]}))).mark_rule(
        color=color, strokeDash=dash).encode(
        y="value:Q", tooltip=[alt.Tooltip("label:N", title="line"), alt.Tooltip("value:Q", format=".4g")])


def _rule_note(label: str, style: str = "threshold") -> str:
    return f"{LINE_STYLES[style][2]}: {label}"


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
                  dash: str | None = None, notes=(), colour: str = "series", hide: str | None = None) -> alt.LayerChart:
    """Lines over training steps (log scale, else shares 0–100 %) with `rules` ((value, label, style) lines) and
    a subtitle of what the lines mean and what is missing; `hide`: a filter expression for the rows drawn."""
    drawn, zeros, hidden = _drawable(df, log)
    y = (alt.Y("value:Q", title=y_title, scale=LOG, axis=LOG_AXIS) if log
         else alt.Y("value:Q", title=y_title, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")))
    layers = [*_lines(drawn, _step_x(), STEP_TIP, y, y_title, dash, colour, zeros, hide),
              *(_rule(*rule) for rule in rules), *_event_rules(events)]
    return alt.layer(*layers).properties(title=_title(
        title, *notes, *(_rule_note(*rule[1:]) for rule in rules), _zeros_note(zeros), _left_out(hidden, log),
        _events_note(events)))


# --- training curves ------------------------------------------------------------------------------------
def loss_chart(data: LabChartData) -> alt.LayerChart:
    """The loss against a memoryless model's: staying on that line means no gradient crossed the distance."""
    task = data.facts.task
    if task is None:  # a watched model: the loss its script passed to w.step, against no known baseline
        return _series_chart("Training loss", data.loss.assign(series="loss"), "loss (as passed to w.step, log scale)",
                             data.events, notes=["your script's loss; watch() knows no memoryless baseline for it"])
    label = (f"memoryless baseline, {task.baseline_label}: loss {task.baseline_loss:.3g} (a model that ignores "
             "the long-range dependency)")
    return _series_chart("Training loss", data.loss.assign(series="loss"), f"loss ({task.loss_name}, log scale)",
                         data.events, rules=[(task.baseline_loss, label)])


TRAINING_BATCH, HELDOUT_BATCH = "training batch", "held-out batch"
SMOOTH_PARAM = "smooth"  # the chart's own checkbox: each viewer's browser smooths or not, the server builds one spec


def smoothed_label(steps: int) -> str:
    return f"training, {steps}-step mean"


def metric_chart(data: LabChartData) -> alt.LayerChart:
    """Accuracy (linear, 0–100 %) or MSE (log scale) on each step's training batch, its trailing mean (a checkbox
    under the chart hides it) and on the fixed held-out batch, against the memoryless baseline."""
    task = data.facts.task
    log = not task.higher_is_better  # accuracy is a share; an MSE spans decades
    y_title = f"{task.metric_name} (log scale)" if log else f"{task.metric_name} (share correct, 0–100 %)"
    smoothed = smoothed_label(data.smoothing_steps)
    series = pd.concat([data.metric.assign(series=TRAINING_BATCH), data.metric_smoothed.assign(series=smoothed),
                        data.heldout.assign(series=HELDOUT_BATCH)], ignore_index=True)
    every = data.facts.heldout_every
    schedule = f"every {every} steps" if every else "after the last step"
    smooth = alt.param(name=SMOOTH_PARAM, value=True, bind=alt.binding_checkbox(
        name=f"Smooth the training-batch {task.metric_name} (mean of the last {data.smoothing_steps} steps) "))
    chart = _series_chart(
        f"{task.metric_name[:1].upper()}{task.metric_name[1:]}, training and held-out", series, y_title, data.events,
        rules=[(task.baseline, f"memoryless baseline: {task.baseline_label}")], log=log,
        notes=[f"training batch: the {data.facts.batch_size} sequences of each step; held-out batch: "
               f"{EVAL_BATCH} fixed sequences no step trains on, measured {schedule}"],
        hide=f"{SMOOTH_PARAM} || datum.series !== '{smoothed}'")
    return chart.add_params(smooth)


# --- gradients and weights ------------------------------------------------------------------------------
def grad_norm_chart(data: LabChartData) -> alt.LayerChart:
    """Gradient norms per lane, of the readout and globally, against the exploding line and the clip line."""
    facts = data.facts
    rules = [(GRAD_LIMIT, GRAD_LIMIT_LABEL)]
    notes = ["pre-clip norms per layer and of the readout weight"]
    if facts.watched:  # its scale is the user's loss's; its verdict reads no threshold of it
        rules = []
        notes = ["per layer and direction of each recurrent module (all its parameters); global: every parameter "
                 "of the model, as they were when w.step was called"]
    if facts.clip == "norm":
        rules.append((facts.clip_threshold, f"clip threshold {facts.clip_threshold:g} (global norm)", "clip"))
    elif facts.clip == "value":
        notes.append(f"clipping by value at |g| ≤ {facts.clip_threshold:g} per entry (no norm line to draw)")
    return _series_chart("Gradient norms", data.grad_norms, "‖∇‖ (L2 norm, log scale)", data.events,
                         rules=rules, notes=notes)


def weight_chart(data: LabChartData) -> alt.LayerChart:
    """Weight norm and largest |w| per layer: exponential growth here is what makes gradients explode."""
    notes = ["solid and dashed: ‖W‖ (L2 norm) and max |w| after each step"]
    if data.facts.watched:
        notes.append("per layer and direction of each recurrent module (all its parameters)")
    return _series_chart("Weights", data.weights, "weight magnitude (log scale)", data.events, dash="quantity",
                         notes=notes)


def update_ratio_chart(data: LabChartData) -> alt.LayerChart:
    """How far each step moves the weights relative to their size (Δw norm over w norm)."""
    where = ("per layer and direction of each recurrent module (all its parameters)" if data.facts.watched
             else "per layer and of the readout weight")
    return _series_chart("Update ratio", data.update_ratios, "‖Δw‖ / ‖w‖ per step (log scale)", data.events,
                         notes=[where])


def spectral_chart(data: LabChartData) -> alt.LayerChart:
    """σ_max(W_hh) per layer; for a vanilla RNN below 1/γ the gradient must vanish (Pascanu et al. 2013).
    The y title stays short: one taller than the plot hides the chart's title in Vega."""
    facts = data.facts
    rules, notes = [], ["largest singular value of each layer's recurrent matrix, on recorded steps"]
    bounds = {vanishing_bound(a) for c, a in zip(facts.cells, facts.activations) if c == "rnn"}
    if len(bounds) == 1 and set(facts.cells) == {"rnn"}:
        bound = bounds.pop()
        rules.append((bound, f"1/γ = {bound:g} — below: vanishing guaranteed (Pascanu et al. 2013)"))
    elif bounds:  # a watched model whose vanilla RNN layers are not its only ones, or differ in activation
        notes.append("the 1/γ vanishing bound holds for vanilla RNN layers only (theirs: 1/γ = "
                     + ", ".join(f"{b:g}" for b in sorted(bounds)) + "); not drawn across all layers")
    else:
        notes.append("the 1/γ vanishing bound holds for vanilla RNNs only")
    return _series_chart("Recurrent matrix σ_max(W_hh)", data.sigma_max,
                         "σ_max(W_hh) (log scale)", data.events, rules=rules, notes=notes)


def saturation_chart(data: LabChartData) -> alt.LayerChart:
    """Shares of saturated hidden units and gate entries: a saturated unit passes almost no gradient back."""
    parts = data.saturation.rename(columns={"lane": "layer"})
    limit = [] if data.facts.watched else [(SATURATION_LIMIT, f"{SATURATION_LIMIT * 100:g} % (diagnosis limit)")]
    return _series_chart("Saturation", parts, "share saturated (0–100 %)", data.events, rules=limit, log=False,
                         notes=["hidden units where the activation is flat; sigmoid gates stuck near 0 or 1",
                                "colour: hidden units or gate; dash pattern: layer"], colour="part", dash="layer")


# --- gradient through time ------------------------------------------------------------------------------
HEATMAP_BAND_PX = 180  # height of one layer's band
HEATMAP_FRAME_PX = 110  # title and axis: Streamlit fits the whole chart, not only its plot, into the height
MARKER = "white dashed rule"


def marker_note(step: int | None) -> str:
    """The caption line that explains the heatmap's marker at the step the profile chart shows."""
    return "" if step is None else f"{MARKER}: step {step}, whose profile the gradient-back-through-time chart shows"


def _vega_string(text: str) -> str:
    """`text` as a Vega expression's string literal (a watched module's path may hold any character)."""
    return json.dumps(text)


def time_grad_heatmap(data: LabChartData) -> alt.LayerChart:
    """‖∂L/∂h_t‖ per recorded step and time step, one band of rows per layer (layer 0 at the bottom) in one
    view, so it fits its column as every other chart does; 0 and NaN/±Inf get own colours (no log10), and a
    rule marks the step the profile chart shows."""
    cells = data.time_grad_cells
    T = max(data.facts.T, 1)  # the facts cover every recorded t; a watched run knows none before its first
    lanes = data.facts.lanes
    layers = list(range(len(lanes)))  # from the facts: the spec is the same before any row
    per_row = int((cells["t_to"] - cells["t_from"]).max()) + 1 if not cells.empty else 1
    gap = max(1, round(T * 0.15))  # empty rows between two layers' bands
    period = T + gap
    offset = cells["layer"].astype(int) * period if not cells.empty else 0
    cells = cells.assign(y0=cells["t_from"] - 0.5 + offset, y1=cells["t_to"] + 0.5 + offset,
                         lane=cells["layer"].map(dict(enumerate(lanes))),
                         t=np.where(cells["t_from"] == cells["t_to"], cells["t_from"].astype(str),
                                    cells["t_from"].astype(str) + "–" + cells["t_to"].astype(str)))
    ticks = {k * period + 1: "1" for k in layers} | {k * period + T: str(T) for k in layers}
    if len(layers) > 1:
        ticks |= {k * period + (T + 1) // 2: lanes[k] for k in layers}
    label = " : ".join(f"datum.value == {v} ? {_vega_string(text)}" for v, text in sorted(ticks.items())) + " : ''"
    top = (max(layers) + 1) * period - gap + 0.5
    x = _step_x()
    y = alt.Y("y0:Q", title=f"time step t (1 … {T})" + (" in each layer's band" if len(layers) > 1 else ""),
              scale=alt.Scale(domain=[0.5, top], nice=False, zero=False),
              axis=alt.Axis(values=sorted(ticks), labelExpr=label, grid=False))
    tooltip = [alt.Tooltip("step:Q", title=STEP), alt.Tooltip("lane:N", title="layer"),
               alt.Tooltip("t:N", title="time step t"),
               alt.Tooltip("value:Q", title="smallest ‖∂L/∂h_t‖", format=".3g"), alt.Tooltip("kind:N")]
    finite = alt.Chart(_data(cells[cells["kind"] == FINITE])).mark_rect().encode(
        x=x, x2="step_end:Q", y=y, y2="y1:Q", tooltip=tooltip,
        color=alt.Color("log10:Q", title="log10 ‖∂L/∂h_t‖", scale=alt.Scale(scheme="viridis")))
    special_cells = cells[cells["kind"] != FINITE]
    special = alt.Chart(_data(special_cells)).mark_rect().encode(
        x=x, x2="step_end:Q", y=y, y2="y1:Q", tooltip=tooltip,
        color=alt.Color("kind:N", title="no log10", legend=alt.Undefined if len(special_cells) else None,
                        scale=alt.Scale(domain=list(SPECIAL_CELLS), range=list(SPECIAL_CELLS.values()))))
    marker = alt.Chart(_data(pd.DataFrame({"profile_step": [] if data.profile_step is None
                                                            else [data.profile_step]}))).mark_rule(
        color="white", strokeDash=[4, 3], strokeWidth=1.5).encode(
        x=alt.X("profile_step:Q", title=STEP), tooltip=[alt.Tooltip("profile_step:Q", title="profile shown at step")])
    notes = ["colour: log10 of the smallest ‖∂L/∂h_t‖ in the cell (L2 norm over batch and units)",
             f"grey: {UNDERFLOW}; red cells: {NONFINITE} (NaN/±Inf)",
             f"{lanes[0]} at the bottom" if len(layers) > 1 else "",
             f"each row covers up to {per_row} time steps" if per_row > 1 else "",
             "" if not cells.empty else "no per-time-step gradients recorded yet", _events_note(data.events),
             marker_note(data.profile_step)]
    return (alt.layer(finite, special, *_event_rules(data.events), marker).resolve_scale(color="independent")
            .properties(title=_title("Gradient reaching each time step, over training", *notes),
                        height=HEATMAP_FRAME_PX + HEATMAP_BAND_PX * len(layers)))


def time_profile_chart(data: LabChartData) -> alt.LayerChart:
    """The latest finite ‖∂L/∂h_t‖ over t and its fit gain^(T−t): how far back the network can learn."""
    lanes = data.facts.lanes
    T = max(data.facts.T, 1)
    profile = data.time_profile.assign(series=data.time_profile["layer"].map(dict(enumerate(lanes))), line="measured")
    fit = data.time_fit_line.assign(series=lanes[0], line="fit ∝ gain^(T−t)")
    drawn, zeros, hidden = _drawable(pd.concat([profile, fit], ignore_index=True), log=True)
    y_title = "‖∂L/∂h_t‖ (L2 norm, log scale)"
    x = alt.X("t:Q", title=f"time step t (1 … {T})", scale=alt.Scale(domain=[1, T]))
    y = alt.Y("value:Q", title=y_title, scale=LOG, axis=LOG_AXIS)
    where = ("" if not data.profile_step else f"at step {data.profile_step}, the step chosen below" if data.scrubbed
             else f"at step {data.profile_step}, the latest with a finite profile")
    return alt.layer(*_lines(drawn, x, alt.Tooltip("t:Q", title="time step t"), y, y_title, dash="line",
                                     zeros=zeros)).properties(title=_title(
        "Gradient back through time", fit_summary(data), where, _zeros_note(zeros), _left_out(hidden, log=True)))


def fit_summary(data: LabChartData) -> str:
    """The profile's fit in words: "gain ×0.74 per step · memory horizon ≈ 23 steps"."""
    if data.facts.watched:
        return _reach_summary(data)
    fit = data.time_fit
    if fit is None:
        return "no finite time profile recorded yet"
    if fit.gain is None:
        return "too few positive values to fit a gain"
    if fit.horizon is None:
        return f"gain ×{fit.gain:.2f} per step · no decay back in time"
    return f"gain ×{fit.gain:.2f} per step · memory horizon ≈ {fit.horizon:.0f} steps"


def _reach_summary(data: LabChartData) -> str:
    """A watched model's loss may read a lane anywhere, so no gain^(T−t) is fitted: its first lane's reach from
    its largest ‖∂L/∂h_t‖, as its verdict reads it."""
    rows = data.time_profile[data.time_profile["layer"] == 0]["value"].to_numpy(dtype=float)
    if not len(rows) or not np.isfinite(rows).all() or rows.max() <= 0:
        return "no finite time profile recorded yet"
    share, largest, back = lane_reach(rows.tolist())
    reach = "none reaches t = 1 (float32 underflow)" if share == 0 else f"{share_text(share)} of it reaches t = 1"
    return (f"{data.facts.lanes[0]}: largest at t = {largest}, {reach}, above {VANISHED:.0%} of it for {back} "
            f"step{'s' * (back != 1)} back (no gain fitted: your loss may read a layer at any step)")


# The lab's charts in rows: two side by side, or one at full width (the heatmap needs it).
LAB_CHART_ROWS = ((loss_chart, metric_chart), (grad_norm_chart, time_profile_chart), (time_grad_heatmap,),
                  (weight_chart, update_ratio_chart), (spectral_chart, saturation_chart))
# A watched model has no metric (its script passes only the loss): the same charts, one fewer.
WATCHED_CHART_ROWS = ((loss_chart, grad_norm_chart), (time_profile_chart, spectral_chart), (time_grad_heatmap,),
                      (weight_chart, update_ratio_chart), (saturation_chart,))


def chart_rows(data: LabChartData) -> tuple[tuple, ...]:
    return WATCHED_CHART_ROWS if data.facts.watched else LAB_CHART_ROWS
