"""The runs page's data: stored runs as a table, and up to four runs side by side on shared axes."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from . import rundata as rd
from .chartdata import downsample
from .charts import LOG_AXIS
from .config import ConfigError, RunConfig, field_map
from .palette import ordered_scale
from .store import RunInfo, Store

MAX_COMPARED = 4
# What can be overlaid: name in METRICS (global rows) → axis title and whether it spans decades.
QUANTITIES = {
    rd.LOSS: ("task loss (log scale)", True),
    rd.METRIC: ("training-batch metric (accuracy or MSE)", False),
    rd.GRAD_NORM_PRE_CLIP: ("global gradient norm before clipping (L2, log scale)", True),
    rd.GRAD_NORM_POST_CLIP: ("global gradient norm after clipping (L2, log scale)", True),
    rd.PENALTY: ("L2 weight penalty", False),
}
# The table lists the newest runs only: 20 000 of them took 25 s and 1.8 GB to list whole with every summary.
SHOWN_RUNS = 1000
SUMMARY_KEYS = ("final_loss", "final_metric")  # what the table shows of each run's summary
TABLE_FIELDS = ("cell", "activation", "init", "init_scale", "task", "seq_len", "optimizer", "lr", "clip",
                "clip_threshold", "weight_decay", "seed")


def runs_frame(runs: list[RunInfo]) -> pd.DataFrame:
    """One row per run with its status, key config fields and results, for filtering and picking."""
    rows = []
    for r in runs:
        summary = r.summary or {}
        rows.append({"id": r.id, "created": r.created[:19].replace("T", " "), "status": r.status,
                     "steps done": r.steps_done, **{f: r.config.get(f) for f in TABLE_FIELDS},
                     "final loss": summary.get("final_loss"), "held-out metric": summary.get("final_metric"),
                     "pinned": r.pinned})
    columns = ["id", "created", "status", "pinned", "steps done", *TABLE_FIELDS, "final loss", "held-out metric"]
    return pd.DataFrame(rows, columns=columns)


def filter_runs(table: pd.DataFrame, cells=(), tasks=(), statuses=()) -> pd.DataFrame:
    """Keep the rows matching every non-empty filter."""
    keep = pd.Series(True, index=table.index)
    for column, allowed in (("cell", cells), ("task", tasks), ("status", statuses)):
        if allowed:
            keep &= table[column].isin(list(allowed))
    return table[keep]


def config_differences(runs: list[RunInfo]) -> pd.DataFrame:
    """The config fields whose values differ between the runs (rows: field, columns: run labels)."""
    configs = {run_label(r): r.config for r in runs}
    differing = [f for f in field_map() if len({str(c.get(f)) for c in configs.values()}) > 1]
    return pd.DataFrame({label: [c.get(f) for f in differing] for label, c in configs.items()},
                        index=pd.Index(differing, name="field"))


def run_label(run: RunInfo) -> str:
    try:
        return f"#{run.id} {RunConfig.from_dict(run.config).summary()}"
    except ConfigError:
        return f"#{run.id}"


def compare_series(store: Store, runs: list[RunInfo], quantity: str, max_points: int = 2000) -> pd.DataFrame:
    """One quantity of each run, downsampled in the store, as (run, step, value) rows."""
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity={quantity!r} is not valid; allowed: {', '.join(QUANTITIES)}")
    frames = []
    for r in runs[:MAX_COMPARED]:
        series = store.load_for_charts(r.id).series(quantity).reset_index()
        frames.append(downsample(series.assign(run=run_label(r)), max_points))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "step", "value"])


def compare_chart(df: pd.DataFrame, quantity: str) -> alt.Chart:
    """The runs overlaid on shared axes; what a scale cannot show (NaN, ±Inf, and ≤ 0 on a log scale) is left
    out and counted in the subtitle, never dropped silently."""
    title, log = QUANTITIES[quantity]
    values = df["value"].astype(float)
    drawable = np.isfinite(values) & ((values > 0) if log else True)
    hidden = int((~drawable).sum())
    cannot = "0, NaN or ±Inf, which a log scale cannot show" if log else "NaN or ±Inf"
    subtitle = [f"{hidden} value{'s' * (hidden != 1)} not drawn: {cannot}"] if hidden else []
    y = alt.Y("value:Q", title=title, scale=alt.Scale(type="log") if log else alt.Undefined,
              axis=LOG_AXIS if log else alt.Undefined)
    return (alt.Chart(df[drawable], title=alt.TitleParams(f"{quantity.replace('_', ' ')} of the compared runs",
                                                          subtitle=subtitle, anchor="start"))
            .mark_line()
            .encode(x=alt.X("step:Q", title="training step"), y=y,
                    color=alt.Color("run:N", title="run", scale=ordered_scale(df["run"]),  # no red: that is NaN/Inf
                                    legend=alt.Legend(orient="bottom", labelLimit=600)),
                    tooltip=["run", "step", alt.Tooltip("value:Q", format=".4g")]))
