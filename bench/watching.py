"""P7: what watching costs. A run trained by the dashboard's `RunManager` while a Lab page draws its charts every
second ÷ the same run's steps while nobody draws.

One run, windows of `window_seconds` alternating unwatched / watched, so both sides share the run, its process and
the machine's drift; the per-step seconds come from the run's own `step_seconds` rows. "Drawing" is what a Lab
page's poll does in the server process when the run changed: `lab_chart_data`, every chart's spec built
(`chartspecs`, as the chart cache does once per stored state for all viewers) and its frames turned into Arrow
bytes (as Streamlit sends them)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from diagnostics import rundata as rd
from diagnostics.chartdata import lab_chart_data
from diagnostics.chartspecs import lab_chart_specs
from diagnostics.limits import ServerLimits
from diagnostics.live import RunManager

from .training import RECORD_EVERY, config_for

MARGIN = 3  # steps left out at each window's edges: the page learns the step count up to 0.1 s late


def _to_arrow(data) -> bytes:
    sink = pa.BufferOutputStream()
    table = pa.Table.from_pandas(data)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def draw(store, run_id: int) -> None:
    """One Lab poll's server-side work for a run."""
    for row in lab_chart_specs(lab_chart_data(store, run_id)):
        for spec in row:
            for frame in spec.datasets.values():
                _to_arrow(frame)


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
