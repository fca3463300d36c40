"""P6: resident memory growth over a long run recording everything every step into the store.

Run in a fresh interpreter (`python -m bench.memory CELL T STEPS THREADS`), so nothing another benchmark or
another cell left behind counts; it prints one JSON object. RSS comes from /proc/self/status, sampled every
`SAMPLE_EVERY` steps."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from diagnostics.store import Store
from diagnostics.train import train

from .training import config_for

SAMPLE_EVERY = 100
WARMUP = 200  # steps (at most half the run)
# Small hidden and batch sizes keep 20 000 steps at T=200 within half an hour. What a recorded step writes
# (a metric row per layer, one ‖∂L/∂h_t‖ per time step and layer, gate statistics per time step, gate and
# layer) depends on the cell, T and the layers, not on these sizes, and that is what could accumulate.
SIZES = {"hidden_size": 16, "batch_size": 16}


def rss_mb() -> float:
    """This process's resident set size in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(cell: str, T: int, steps: int) -> dict:
    """RSS before the run, after the warm-up, at its largest after it and at the end.

    The growth judged is the largest RSS after the warm-up minus the RSS when it ended: the first steps' one-off
    costs (the optimiser imports torch._dynamo, ~90 MB; allocator pools; SQLite's page cache) are not memory kept
    per step, so they are reported apart."""
    warmup = min(WARMUP, steps // 2)
    config = config_for(cell, T, steps, record_every=1).replace(**SIZES)
    samples: dict[int, float] = {}

    def on_step(summary):
        if summary.steps_done % SAMPLE_EVERY == 0 or summary.steps_done == warmup:
            samples[summary.steps_done] = rss_mb()

    started = time.perf_counter()
    before = rss_mb()
    with tempfile.TemporaryDirectory(prefix="gfl-bench-") as tmp, Store(Path(tmp) / "runs.sqlite") as store:
        writer = store.writer(store.create_run(config.to_dict()))
        summary, _ = train(config, sink=writer, on_step=on_step)
        writer.close(summary.status, summary.to_dict())
    peak, end = max(v for s, v in samples.items() if s >= warmup), samples[max(samples)]
    return {"cell": cell, "T": T, **SIZES, "steps": steps,
            "status": summary.status, "rss_before_mb": round(before, 1), "rss_warm_mb": round(samples[warmup], 1),
            "rss_peak_mb": round(peak, 1), "rss_end_mb": round(end, 1), "warmup_steps": warmup,
            "warmup_growth_mb": round(samples[warmup] - before, 1), "growth_mb": round(peak - samples[warmup], 1),
            "seconds": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    cell, T, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    print(json.dumps(measure(cell, T, steps)))
