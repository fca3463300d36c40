"""P7: what watching costs. A run trained by the dashboard's `RunManager` while a Lab page draws its charts every
second ÷ the same run's steps while nobody draws.

One run, windows of `window_seconds` alternating unwatched / watched, so both sides share the run, its process and
the machine's drift; the per-step seconds come from the run's own `step_seconds` rows. "Drawing" is what a Lab
page's poll does in the server process: `lab_chart_data`, every chart built and turned into a validated
Vega-Lite spec with its frames as Arrow bytes (as Streamlit sends them)."""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import altair as alt
import pyarrow as pa

from diagnostics import charts, rundata as rd
from diagnostics.chartdata import lab_chart_data
from diagnostics.limits import ServerLimits
from diagnostics.live import RunManager

from .training import RECORD_EVERY, config_for

MARGIN = 3  # steps left out at each window's edges: the page learns the step count up to 0.1 s late


def _to_arrow(data, datasets: dict) -> dict:
    sink = pa.BufferOutputStream()
    table = pa.Table.from_pandas(data)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload = sink.getvalue().to_pybytes()
    name = hashlib.md5(payload).hexdigest()
    datasets[name] = payload
    return {"name": name}


def draw(store, run_id: int) -> None:
    """One Lab poll's server-side work for a run."""
    data = lab_chart_data(store, run_id)
    datasets: dict = {}
    alt.data_transformers.register("bench_arrow", _to_arrow)
    with alt.data_transformers.enable("bench_arrow", datasets=datasets):
        for row in charts.LAB_CHART_ROWS:
            for build in row:
                build(data).to_dict()


def watching_cost(cell: str, T: int, window_seconds: float, windows: int) -> dict:
    config = config_for(cell, T, steps=100_000, record_every=RECORD_EVERY)
    spans: dict[bool, list[tuple[int, int]]] = {False: [], True: []}
    polls = 0
    with tempfile.TemporaryDirectory(prefix="gfl-bench-") as tmp:
        manager = RunManager(Path(tmp) / "runs.sqlite", ServerLimits(max_runs=1, max_run_minutes=0,
                                                                      max_run_megabytes=0))
        run = manager.submit(config, owner="bench")
        while run.steps_done < 2 * RECORD_EVERY:  # warm-up: process start, first recorded steps
            manager.touch(run)
            time.sleep(0.1)
        for i in range(2 * windows):
            watched, first, end = i % 2 == 1, run.steps_done, time.monotonic() + window_seconds
            while time.monotonic() < end:
                manager.touch(run)
                started = time.monotonic()
                if watched:
                    draw(manager.store, run.run_id)
                    polls += 1
                time.sleep(max(0.0, (1.0 if watched else 0.2) - (time.monotonic() - started)))
            spans[watched].append((first + MARGIN, run.steps_done - MARGIN))
        manager.stop(run)
        while run.state != "done":
            time.sleep(0.05)
        seconds = manager.store.load(run.run_id).series(rd.STEP_SECONDS)
    medians = {}
    for watched, ranges in spans.items():
        values = [v for lo, hi in ranges for v in seconds.loc[lo:hi].tolist()]
        medians[watched] = statistics.median(values)
    a, b = medians[True], medians[False]
    return {"cell": cell, "T": T, "a_ms": round(a * 1e3, 3), "b_ms": round(b * 1e3, 3), "ratio": round(a / b, 3),
            "polls": polls, "steps": int(seconds.index.max())}
