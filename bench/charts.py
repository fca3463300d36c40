"""P5: how the lab page's chart preparation scales with a stored run's length (100 000 steps against 1 000).

Training 100 000 steps would take hours, so the runs are written straight into a store: every step repeats
the rows a real run of the same config recorded (an unrecorded step, or a recorded one every `record_every`),
with the values drifting smoothly so no series is constant."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

from diagnostics.chartdata import lab_chart_data
from diagnostics.config import RunConfig
from diagnostics.store import Store
from diagnostics.train import train

from .training import config_for

MAX_POINTS = 2000  # what the lab page asks for


class _StepSink:
    """Keeps each step's rows apart, to serve as templates."""

    def __init__(self):
        self.steps: dict[int, tuple] = {}

    def add(self, step, metrics=(), time_grads=(), gates=(), events=()):
        self.steps[step] = (list(metrics), list(time_grads), list(gates))


def templates(config: RunConfig) -> tuple[tuple, tuple]:
    """(unrecorded step rows, recorded step rows) from a short real run."""
    sink = _StepSink()
    train(config, sink=sink)
    return sink.steps[2], sink.steps[config.record_every]


def _drift(value, step: int, steps: int):
    if not isinstance(value, float) or not math.isfinite(value):
        return value
    return value * (0.5 + 0.5 * math.exp(-5 * step / steps) + 0.02 * math.sin(step / 37))


def write_run(store: Store, config: RunConfig, steps: int, plain: tuple, recorded: tuple) -> int:
    """A stored run of `steps` steps shaped like the template run of `config`; returns its id."""
    record_every = config.record_every
    run_id = store.create_run({**config.to_dict(), "steps": steps})
    writer = store.writer(run_id, flush_every=1000)
    for step in range(1, steps + 1):
        metrics, time_grads, gates = recorded if step == 1 or step % record_every == 0 else plain
        writer.add(step,
                   metrics=[(step, n, layer, tensor, _drift(v, step, steps)) for _, n, layer, tensor, v in metrics],
                   time_grads=[(step, layer, t, _drift(v, step, steps)) for _, layer, t, v in time_grads],
                   gates=[(step, layer, g, t, _drift(m, step, steps), lo, hi) for _, layer, g, t, m, lo, hi in gates])
    writer.close("completed", {})
    return run_id


def chart_scaling(cell: str, T: int, big: int, small: int, reps: int) -> dict:
    """Median seconds of `lab_chart_data` on a `big`-step and a `small`-step stored run of this cell and
    sequence length, called alternately."""
    config = config_for(cell, T, steps=10, record_every=10)
    plain, recorded = templates(config)
    with tempfile.TemporaryDirectory(prefix="gfl-bench-") as tmp, Store(Path(tmp) / "runs.sqlite") as store:
        started = time.perf_counter()
        big_id = write_run(store, config, big, plain, recorded)
        small_id = write_run(store, config, small, plain, recorded)
        write_seconds = time.perf_counter() - started
        times: dict[int, list[float]] = {big_id: [], small_id: []}
        cpu: dict[int, list[float]] = {big_id: [], small_id: []}
        lab_chart_data(store, big_id, max_points=MAX_POINTS)  # warm-up: imports, SQLite page cache
        lab_chart_data(store, small_id, max_points=MAX_POINTS)
        for _ in range(reps):
            for run_id in (big_id, small_id):
                t0, c0 = time.perf_counter(), time.thread_time()
                lab_chart_data(store, run_id, max_points=MAX_POINTS)
                times[run_id].append(time.perf_counter() - t0)
                cpu[run_id].append(time.thread_time() - c0)
    a, b = statistics.median(times[big_id]), statistics.median(times[small_id])
    ca, cb = statistics.median(cpu[big_id]), statistics.median(cpu[small_id])
    return {"cell": cell, "T": T, "big_steps": big, "small_steps": small, "reps": reps, "a_ms": round(a * 1e3, 3),
            "b_ms": round(b * 1e3, 3), "ratio": round(a / b, 3), "cpu_a_ms": round(ca * 1e3, 3),
            "cpu_b_ms": round(cb * 1e3, 3), "cpu_ratio": round(ca / cb, 3), "write_seconds": round(write_seconds, 1)}
