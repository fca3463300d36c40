"""The training-speed cases P1–P4: two loops side by side in lock-step, per cell and sequence length."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from diagnostics import fastpath
from diagnostics.config import RunConfig
from diagnostics.store import Store
from diagnostics.train import train

from .lockstep import Loop, StepTimes, alternate, per_step
from .plain import fused_loop, unrolled_loop

RECORD_EVERY = 10  # the lab's default schedule
FLUSH_EVERY = 50  # RunWriter's default batch, so a store-backed step window holds whole flush cycles


@dataclass(frozen=True)
class Window:
    """Steps thrown away while caches and allocators settle, then steps measured."""

    warmup: int
    measured: int


def config_for(cell: str, T: int, steps: int, record_every: int) -> RunConfig:
    """The issue's setting: batch 64, hidden 64, the agreement task with T input steps (seq_len + 2)."""
    return RunConfig(cell=cell, hidden_size=64, batch_size=64, seq_len=T - 2, steps=steps,
                     record_every=record_every)


def lab_loop(config: RunConfig, *, unrolled: bool = False, store_dir: Path | None = None) -> Loop:
    """`train` as the CLI runs it, into memory or into a store, optionally without the fused fast path."""
    def loop(on_step):
        def run():
            if store_dir is None:
                train(config, on_step=lambda summary: on_step(summary.steps_done))
                return
            with Store(store_dir / "runs.sqlite") as store:
                writer = store.writer(store.create_run(config.to_dict()), flush_every=FLUSH_EVERY)
                summary, _ = train(config, sink=writer, on_step=lambda s: on_step(s.steps_done))
                writer.close(summary.status, summary.to_dict())
        if unrolled:
            with fastpath.unrolled_only():  # entered in the loop's own thread: the switch is per thread
                run()
        else:
            run()
    return loop


def _one_kind(step: int) -> int:
    return 0


def _result(a: StepTimes, b: StepTimes, first: int, kind_a=_one_kind, kind_b=_one_kind, **fields) -> dict:
    """Wall-clock medians and their ratio (what the targets judge), and the same for CPU time."""
    wa, wb = per_step(a.wall, first, kind_a), per_step(b.wall, first, kind_b)
    ca, cb = per_step(a.cpu, first, kind_a), per_step(b.cpu, first, kind_b)
    return {**fields, "a_ms": round(wa * 1e3, 3), "b_ms": round(wb * 1e3, 3), "ratio": round(wa / wb, 3),
            "cpu_a_ms": round(ca * 1e3, 3), "cpu_b_ms": round(cb * 1e3, 3), "cpu_ratio": round(ca / cb, 3)}


def recording_cost(cell: str, T: int, window: Window) -> dict:
    """P1: recording everything every step ÷ the same unrolled training recording only the cheap scalars."""
    steps = window.warmup + window.measured
    full = lab_loop(config_for(cell, T, steps, record_every=1))
    bare = lab_loop(config_for(cell, T, steps, record_every=0), unrolled=True)
    a, b = alternate(full, bare)
    return _result(a, b, window.warmup + 1, cell=cell, T=T)


def against_pytorch(cell: str, T: int, window: Window) -> dict:
    """P2: the lab's training with the default schedule ÷ a plain fused-PyTorch loop on the same task."""
    config = config_for(cell, T, window.warmup + window.measured, RECORD_EVERY)
    a, b = alternate(lab_loop(config), fused_loop(config))
    # Recorded steps are one in RECORD_EVERY: weighted by that share, not lost in a median of all steps.
    return _result(a, b, window.warmup + 1, kind_a=lambda step: step % RECORD_EVERY == 0, cell=cell, T=T)


def unrolled_vs_fused(cell: str, T: int, window: Window) -> dict:
    """P3: one plain training step through the written-out cells ÷ the same step through PyTorch's fused module."""
    config = config_for(cell, T, window.warmup + window.measured, 0)
    a, b = alternate(unrolled_loop(config), fused_loop(config))
    return _result(a, b, window.warmup + 1, cell=cell, T=T)


def store_cost(cell: str, T: int, window: Window) -> dict:
    """P4: training with the default schedule into the SQLite store ÷ the same into memory."""
    config = config_for(cell, T, window.warmup + window.measured, RECORD_EVERY)
    with tempfile.TemporaryDirectory(prefix="gfl-bench-") as tmp:
        a, b = alternate(lab_loop(config, store_dir=Path(tmp)), lab_loop(config))

    def kind(step):  # recorded steps and the steps that commit a batch are rarer and heavier
        return step % RECORD_EVERY == 0, step % FLUSH_EVERY == 0
    return _result(a, b, window.warmup + 1, kind_a=kind, kind_b=kind, cell=cell, T=T)
