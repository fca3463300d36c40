"""The lab's charts as the browser gets them while a run trains: specs that stay the same between polls.

Streamlit names a chart's datasets by a hash of their rows, so each new step made a new spec and the browser
built the chart again (blank, re-laid out, one chart after another). Here each dataset is named by its place
in the chart and the subtitle (which counts points and names steps, so it changes as the run goes) is taken
out to be drawn as a caption: a live chart's spec changes only when its structure does (a red rule appears),
and otherwise the browser swaps the new rows into the Vega view it already shows. Building the specs is the
expensive part of drawing (Altair's validation), so `chartcache` builds them once per stored state for every
viewer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import altair as alt
import pandas as pd

from . import charts
from .chartdata import LabChartData

# Altair's default theme sets a 300-pixel view; Streamlit drops it too (the column decides the width).
_THEME_VIEW = {"continuousWidth": 300, "continuousHeight": 300}


@dataclass(frozen=True)
class ChartSpec:
    """One chart: its Vega-Lite spec without data, the rows of each named dataset, and its subtitle lines."""

    name: str  # the builder's, e.g. "loss_chart": a stable key for the page element
    spec: dict
    datasets: dict[str, pd.DataFrame]
    notes: tuple[str, ...]

    def with_data(self) -> dict:
        """The spec with its datasets, as `st.vega_lite_chart` takes it (it sends the frames as Arrow)."""
        return {**self.spec, "datasets": dict(self.datasets)}


def chart_spec(chart: alt.TopLevelMixin, name: str) -> ChartSpec:
    """`chart` (built for this call: its data is replaced by names) as a spec with stable dataset names."""
    datasets: dict[str, pd.DataFrame] = {}
    _name_datasets(chart, datasets, {})
    spec = chart.to_dict(validate=False)  # the tests validate every builder; here it was most of the cost
    title = spec.get("title")
    notes: tuple[str, ...] = ()
    if isinstance(title, dict):
        subtitle = title.pop("subtitle", [])
        notes = tuple([subtitle] if isinstance(subtitle, str) else subtitle)
    if spec.get("config", {}).get("view") == _THEME_VIEW:
        del spec["config"]["view"]
        if not spec["config"]:
            del spec["config"]
    return ChartSpec(name=name, spec=spec, datasets=datasets, notes=notes)


def _name_datasets(chart, datasets: dict[str, pd.DataFrame], names: dict[int, str]) -> None:
    """Replace every frame in the chart tree by a name given in order of appearance (one frame, one name)."""
    data = getattr(chart, "data", alt.Undefined)
    if isinstance(data, pd.DataFrame):
        if id(data) not in names:
            names[id(data)] = f"data-{len(datasets)}"
            datasets[names[id(data)]] = data
        chart.data = alt.NamedData(name=names[id(data)])
    for part in ("layer", "vconcat", "hconcat", "concat"):
        children = getattr(chart, part, alt.Undefined)
        for child in (() if children is alt.Undefined else children):
            _name_datasets(child, datasets, names)


# The charts that show one recorded step: the gradient-through-time profile.
AT_STEP_CHARTS = (charts.time_profile_chart,)


def lab_chart_specs(data: LabChartData) -> tuple[tuple[ChartSpec, ...], ...]:
    """Every lab chart of a run, in `charts.chart_rows`' rows."""
    return tuple(tuple(_spec(build, data) for build in row) for row in charts.chart_rows(data))


def at_step_specs(specs: tuple[tuple[ChartSpec, ...], ...], data: LabChartData) -> tuple[tuple[ChartSpec, ...], ...]:
    """`specs` with the charts of AT_STEP_CHARTS built again from `data` (a run's data `at_step` a chosen step)
    and the heatmap's marker moved to that step; the others are kept, so a viewer's scrubbing builds one chart,
    not nine."""
    fresh = {spec.name: spec for spec in (_spec(build, data) for build in AT_STEP_CHARTS)}

    def at_step(spec: ChartSpec) -> ChartSpec:
        if spec.name == charts.time_grad_heatmap.__name__:
            return _with_marker(spec, data.profile_step)
        return fresh.get(spec.name, spec)

    return tuple(tuple(at_step(spec) for spec in row) for row in specs)


def _with_marker(spec: ChartSpec, step: int | None) -> ChartSpec:
    """The heatmap's spec with its marker (the one-column dataset "profile_step") and its note at `step`."""
    datasets = {name: (pd.DataFrame({"profile_step": [] if step is None else [step]})
                       if list(rows.columns) == ["profile_step"] else rows) for name, rows in spec.datasets.items()}
    notes = tuple(note for note in spec.notes if not note.startswith(charts.MARKER))
    notes += (charts.marker_note(step),) if step is not None else ()  # also where it had no profile when built
    return dataclasses.replace(spec, datasets=datasets, notes=notes)


def _spec(build, data: LabChartData) -> ChartSpec:
    return chart_spec(build(data), build.__name__)
