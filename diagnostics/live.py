"""Live runs for the dashboard: background worker threads, a server-wide cap with a FIFO queue, Stop.

Workers never touch the UI; they train into the store, and pages poll the store and a `LiveRun`'s
progress. One `RunManager` serves the whole server, so the cap holds across browser sessions.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field

from .config import RunConfig
from .runner import run_into_store
from .store import Store
from .train import RunSummary

MAX_RUNS_ENV = "GFL_MAX_RUNS"
DEFAULT_MAX_RUNS = 2  # one per core of the reference 2-core server


def max_runs_from_env() -> int:
    """Concurrent-run cap from $GFL_MAX_RUNS (a positive integer), else DEFAULT_MAX_RUNS."""
    raw = os.environ.get(MAX_RUNS_ENV, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_RUNS


@dataclass
class LiveRun:
    """One submitted run as the page sees it; mutated only by its worker thread."""

    handle: int
    owner: str
    config: RunConfig
    state: str = "queued"  # queued | running | done
    run_id: int | None = None
    steps_done: int = 0
    steps_per_second: float = 0.0
    started: float | None = None
    summary: RunSummary | None = None
    error: str | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)

    @property
    def eta_seconds(self) -> float | None:
        if self.state != "running" or self.steps_per_second <= 0:
            return None
        return (self.config.steps - self.steps_done) / self.steps_per_second


class RunManager:
    """Starts runs in worker threads, at most `max_concurrent` at a time; later ones wait in order."""

    def __init__(self, store_path: str | os.PathLike | None = None, max_concurrent: int | None = None):
        self.store = Store(store_path)
        self.max_concurrent = max_concurrent or max_runs_from_env()
        self._slots = threading.Semaphore(self.max_concurrent)
        self._lock = threading.Lock()
        self._queue: list[int] = []
        self._runs: dict[int, LiveRun] = {}
        self._handles = itertools.count(1)

    def submit(self, config: RunConfig, owner: str) -> LiveRun:
        """Queue a run for `owner` (a browser session id) and start it as soon as a slot is free."""
        run = LiveRun(handle=next(self._handles), owner=owner, config=config)
        with self._lock:
            self._runs[run.handle] = run
            self._queue.append(run.handle)
        threading.Thread(target=self._work, args=(run,), name=f"gfl-run-{run.handle}", daemon=True).start()
        return run

    def get(self, handle: int) -> LiveRun | None:
        return self._runs.get(handle)

    def queue_position(self, run: LiveRun) -> int | None:
        """1-based place in the waiting line, None once running or done."""
        with self._lock:
            return self._queue.index(run.handle) + 1 if run.handle in self._queue else None

    def stop(self, run: LiveRun) -> None:
        """Ask the run to end after its current step (or not to start, if still queued)."""
        run.stop_event.set()

    def active(self) -> list[LiveRun]:
        return [r for r in self._runs.values() if r.state != "done"]

    def _work(self, run: LiveRun) -> None:
        with self._slots:
            with self._lock:
                self._queue.remove(run.handle)
            if run.stop_event.is_set():
                run.state = "done"
                return
            run.started = time.perf_counter()
            run.run_id = self.store.create_run(run.config.to_dict())
            run.state = "running"

            def progress(summary: RunSummary) -> None:
                run.steps_done = summary.steps_done
                run.steps_per_second = summary.steps_done / max(time.perf_counter() - run.started, 1e-9)

            try:
                run.summary = run_into_store(run.config, self.store, stop=run.stop_event, on_step=progress,
                                             run_id=run.run_id)
            except Exception as e:  # shown on the page; the stored steps stay readable
                run.error = f"{type(e).__name__}: {e}"
            finally:
                run.state = "done"
