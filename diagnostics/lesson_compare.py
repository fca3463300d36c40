"""A lesson's page: its variants overlaid on shared axes, and the gradient through time the lesson compares.

Each chart is a `ChartSpec` with stable dataset names (see `chartspecs`), built from the variants' shared chart
data, so a page that polls while the variants train gets new rows into the charts it shows instead of new
charts; the specs of one state of the lesson's runs are built once for all its viewers (the page caches them).
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .chartdata import LabChartData, nearest_recorded
from .chartspecs import ChartSpec, chart_spec
from .charts import LOG_AXIS
from .compare_charts import compare_chart, compare_series
from .lessons import Lesson
from .palette import ordered_scale
from .store import Store

FIRST, LAST = "first recorded step", "last recorded step"
LATEST = "latest recorded step with a finite profile"
CHOSEN = "recorded step nearest the chosen one"
PROFILE_NOTES = {
    "ends": "solid: the first recorded step (step 1), dashed: the last recorded step",
    "latest": "each variant at its latest recorded step with a finite profile (in the tooltip)",
    "chosen": "each variant at its recorded step nearest the chosen one (in the tooltip)",
}


def lesson_specs(lesson: Lesson, store: Store, data: dict[str, LabChartData],
                 run_ids: dict[str, int]) -> tuple[ChartSpec, ...]:
    """The lesson's overlaid charts (`data`, `run_ids`: variant label → its run's chart data and id, for the
    variants that have a run) and its gradient-through-time comparison."""
    labels = [variant.label for variant in lesson.variants]
    specs = [chart_spec(compare_chart(compare_series(store, data, run_ids, quantity), quantity, labels,
                                      what="the variants"), f"lesson-{quantity}") for quantity in lesson.compare]
    profiles = end_profiles(store, run_ids) if lesson.profile_ends else latest_profiles(data)
    mode = "ends" if lesson.profile_ends else "latest"
    specs.append(chart_spec(profile_chart(profiles, labels, mode), "lesson-profiles"))
    return tuple(specs)


def scrubbed_profiles(lesson: Lesson, store: Store, run_ids: dict[str, int], step: int) -> ChartSpec:
    """The profile chart with every variant at its recorded step nearest `step` (a viewer's scrubber)."""
    rows = []
    for label, run_id in run_ids.items():
        at = nearest_recorded(store.recorded_steps(run_id), step)
        if at is not None:
            profile = store.time_grads_at(run_id, at)
            rows.append(profile[profile["layer"] == 0][["t", "value"]].assign(run=label, at=CHOSEN, step=at))
    labels = [variant.label for variant in lesson.variants]
    return chart_spec(profile_chart(_profile_frame(rows), labels, "chosen"), "lesson-profiles")


def end_profiles(store: Store, run_ids: dict[str, int]) -> pd.DataFrame:
    """Each run's layer-0 ‖∂L/∂h_t‖ at its first and its last recorded step: run, at, step, t, value."""
    frames = []
    for label, run_id in run_ids.items():
        steps = store.recorded_steps(run_id)
        for at, step in ((FIRST, steps[:1]), (LAST, steps[-1:] if len(steps) > 1 else [])):
            for s in step:
                rows = store.time_grads_at(run_id, s)
                frames.append(rows[rows["layer"] == 0][["t", "value"]].assign(run=label, at=at, step=s))
    return _profile_frame(frames)


def latest_profiles(data: dict[str, LabChartData]) -> pd.DataFrame:
    """Each run's layer-0 profile at its latest finite recorded step (what its Lab chart shows)."""
    frames = []
    for label, chart_data in data.items():
        profile = chart_data.time_profile
        if chart_data.profile_step is not None:
            frames.append(profile[profile["layer"] == 0][["t", "value"]].assign(
                run=label, at=LATEST, step=chart_data.profile_step))
    return _profile_frame(frames)


def _profile_frame(frames: list[pd.DataFrame]) -> pd.DataFrame:
    columns = ["run", "at", "step", "t", "value"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def profile_chart(df: pd.DataFrame, runs: list[str], mode: str) -> alt.Chart:
    """The variants' gradient back through time on one log axis, colour by variant; `mode` (a PROFILE_NOTES
    key) says at which steps — "ends": the first recorded step solid and the last dashed, so a gradient that
    reaches the subject only before (or only after) learning shows."""
    values = df["value"].astype(float)
    drawn = df[(values > 0) & (values < float("inf"))]
    hidden = len(df) - len(drawn)
    subtitle = [PROFILE_NOTES[mode]]
    if hidden:
        subtitle.append(f"{hidden} value{'s' * (hidden != 1)} not drawn: 0, NaN or ±Inf, which a log scale "
                        "cannot show")
    encoding = {}
    if mode == "ends":
        encoding["strokeDash"] = alt.StrokeDash("at:N", title="at", scale=alt.Scale(
            domain=[FIRST, LAST], range=[[1, 0], [6, 3]]), legend=alt.Legend(symbolType="stroke",
                                                                             symbolStrokeWidth=2))
    return (alt.Chart(drawn, title=alt.TitleParams("Gradient back through time (layer 0)", subtitle=subtitle,
                                                   anchor="start"))
            .mark_line(clip=True)
            .encode(x=alt.X("t:Q", title="time step t (the loss is at the last)"),
                    y=alt.Y("value:Q", title="‖∂L/∂h_t‖ (L2 norm, log scale)", scale=alt.Scale(type="log"),
                            axis=LOG_AXIS),
                    color=alt.Color("run:N", title="variant", scale=ordered_scale(runs),
                                    legend=alt.Legend(labelLimit=360, symbolType="stroke", symbolStrokeWidth=2)),
                    detail="at:N",
                    tooltip=["run:N", "at:N", alt.Tooltip("step:Q", title="training step"), "t:Q",
                             alt.Tooltip("value:Q", format=".4g")],
                    **encoding))
