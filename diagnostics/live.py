"""Live runs for the dashboard: background workers, a server-wide cap with a FIFO queue, Stop.

Workers never touch the UI; they train into the store, and pages poll the store and a `LiveRun`'s
progress. One `RunManager` serves the whole server, so the cap holds across browser sessions.

Each run trains in a process of its own (forked from a server that has imported torch already, so it starts in
about a tenth of a second). In a thread of the server's process, a run shared the GIL with every page drawing
charts: a watched LSTM trained 3–6× slower than an unwatched one. A thread per run stays in the server to wait
for its turn, relay progress and notice a process that died. As with any multiprocessing, a script that starts
runs itself must do so under `if __name__ == "__main__":`, since each run's process imports the main module.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from . import budget
from .config import RunConfig
from .runner import run_into_store, use_torch_threads
from .store import Store
from .summary import RunSummary

MAX_RUNS_ENV = "GFL_MAX_RUNS"
DEFAULT_MAX_RUNS = 2  # one per core of the reference 2-core server
MAX_WAITING = 20  # a longer queue is refused: a public demo must not pile up threads and hours of work
# A run whose page has not polled for this long was abandoned (tab closed, page reloaded): it is stopped, so a
# visitor who leaves does not keep a slot. Pages poll every second while a run is live.
ABANDONED_SECONDS = 30.0
KEEP_DONE = 100  # finished runs kept in memory for their pages' final view; older ones are in the store only
PROGRESS_SECONDS = 0.1  # a run's process reports its step count at most this often
# forkserver, not fork: the server has Tornado and Streamlit threads whose locks a plain fork could copy held.
_PROCESSES = multiprocessing.get_context("forkserver")
_PROCESSES.set_forkserver_preload(["diagnostics.runner"])


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
    pid: int | None = None  # of the process that trains it
    stop_event: multiprocessing.synchronize.Event = field(default_factory=lambda: _PROCESSES.Event())
    last_seen: float = field(default_factory=time.monotonic)  # when its page last polled it

    @property
    def eta_seconds(self) -> float | None:
        if self.state != "running" or self.steps_per_second <= 0:
            return None
        return (self.config.steps - self.steps_done) / self.steps_per_second


class QueueFull(Exception):
    """The server's waiting line is full; the message says what to do."""


class RunManager:
    """Starts runs in worker threads, at most `max_concurrent` at a time; later ones wait, first in first out."""

    def __init__(self, store_path: str | os.PathLike | None = None, max_concurrent: int | None = None,
                 abandoned_seconds: float = ABANDONED_SECONDS):
        self.store = Store(store_path)
        self.max_concurrent = max_concurrent or max_runs_from_env()
        self.abandoned_seconds = abandoned_seconds
        self._turn = threading.Condition()  # guards everything below; workers wait on it for their turn
        self._queue: deque[int] = deque()
        self._running = 0
        self._runs: dict[int, LiveRun] = {}
        self._done: deque[int] = deque()
        self._handles = itertools.count(1)
        self._threads: list[threading.Thread] = []
        # A worker killed inside torch at interpreter exit aborts the process; stop them cleanly instead.
        atexit.register(self.shutdown)

    def submit(self, config: RunConfig, owner: str) -> LiveRun:
        """Queue a run for `owner` (a browser session id) and start it as soon as a slot is free; a config too big
        to train here raises ConfigError at once, before it takes a place in the queue."""
        budget.check(config)
        run = LiveRun(handle=next(self._handles), owner=owner, config=config)
        with self._turn:
            if len(self._queue) >= MAX_WAITING:
                raise QueueFull(f"The server is busy: {len(self._queue)} runs are waiting for "
                                f"{self.max_concurrent} training slot(s). Try again in a few minutes.")
            self._runs[run.handle] = run
            self._queue.append(run.handle)
            self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(target=self._work, args=(run,), name=f"gfl-run-{run.handle}", daemon=True)
            self._threads.append(thread)
        thread.start()
        return run

    def get(self, handle: int) -> LiveRun | None:
        with self._turn:
            return self._runs.get(handle)

    def touch(self, run: LiveRun) -> None:
        """The run's page is still watching it (called on every poll)."""
        run.last_seen = time.monotonic()

    def queue_position(self, run: LiveRun) -> int | None:
        """1-based place in the waiting line, None once running or done."""
        with self._turn:
            return self._queue.index(run.handle) + 1 if run.handle in self._queue else None

    def stop(self, run: LiveRun) -> None:
        """Ask the run to end after its current step (or not to start, if still queued)."""
        run.stop_event.set()
        with self._turn:
            self._turn.notify_all()  # a queued run leaves the line at once

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every run and wait for the workers, so each run ends as "stopped" with its steps kept."""
        with self._turn:
            runs, threads = list(self._runs.values()), list(self._threads)
        for run in runs:
            self.stop(run)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))

    def _abandoned(self, run: LiveRun) -> bool:
        return time.monotonic() - run.last_seen > self.abandoned_seconds

    def _wait_for_turn(self, run: LiveRun) -> bool:
        """Block until this run heads the line and a slot is free (True), or it is stopped first (False)."""
        with self._turn:
            while not (self._queue[0] == run.handle and self._running < self.max_concurrent):
                if run.stop_event.is_set() or self._abandoned(run):
                    self._queue.remove(run.handle)
                    self._turn.notify_all()
                    return False
                self._turn.wait(timeout=1.0)  # also wakes to notice an abandoned run
            self._queue.popleft()
            self._running += 1
            self._turn.notify_all()  # the next in line may fit too
            return True

    def _work(self, run: LiveRun) -> None:
        if not self._wait_for_turn(run):
            self._finish(run, took_slot=False)
            return
        try:
            run.started = time.perf_counter()
            run.run_id = self.store.create_run(run.config.to_dict())
            run.state = "running"
            self._follow(run, *self._start_process(run))
        except Exception as e:  # shown on the page; the stored steps stay readable
            run.error = f"{e} ({type(e).__name__})"
        finally:
            if run.error is not None:
                kept = "everything it recorded is kept" if run.run_id is not None else "nothing was recorded"
                run.error = f"{run.error}; {kept}"
            self._finish(run, took_slot=True)

    def _start_process(self, run: LiveRun) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        receiver, sender = _PROCESSES.Pipe(duplex=False)
        process = _PROCESSES.Process(target=_train_in_process, name=f"gfl-run-{run.handle}", daemon=True,
                                     args=(run.config, str(self.store.path), run.run_id, run.stop_event, sender))
        process.start()
        run.pid = process.pid
        sender.close()  # the child holds the only sending end, so its exit reads as end of file here
        return process, receiver

    def _follow(self, run: LiveRun, process: multiprocessing.process.BaseProcess, receiver: Connection) -> None:
        """Relay the process's progress and result into `run`, and stop it when its page is abandoned."""
        try:
            while True:
                if self._abandoned(run):
                    run.stop_event.set()
                if not receiver.poll(0.2):
                    continue
                try:
                    kind, value = receiver.recv()
                except EOFError:  # died without a word: killed (out of memory?) or crashed
                    process.join()
                    killed = ", killed by the system, perhaps for lack of memory" if process.exitcode == -9 else ""
                    run.error = f"the run's training process ended unexpectedly (exit code {process.exitcode}{killed})"
                    return
                if kind == "progress":
                    run.steps_done = value
                    run.steps_per_second = value / max(time.perf_counter() - run.started, 1e-9)
                    continue
                if kind == "done":
                    run.summary, run.steps_done = value, value.steps_done
                else:
                    run.error = value
                return
        finally:
            receiver.close()
            process.join()

    def _finish(self, run: LiveRun, took_slot: bool) -> None:
        with self._turn:
            run.state = "done"
            self._running -= took_slot
            self._done.append(run.handle)
            while len(self._done) > KEEP_DONE:
                self._runs.pop(self._done.popleft(), None)
            self._turn.notify_all()


def _train_in_process(config: RunConfig, store_path: str, run_id: int, stop, sender) -> None:
    """A run's own process: train into the store, sending ("progress", steps), then ("done", summary) or
    ("error", message). It ends by itself when the server is gone, so no run outlives its dashboard."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the server reaches its runs through Stop instead
    use_torch_threads()
    server, last = multiprocessing.parent_process(), 0.0

    def progress(summary: RunSummary) -> None:
        nonlocal last
        if server is not None and not server.is_alive():
            stop.set()
        if time.monotonic() - last >= PROGRESS_SECONDS:
            sender.send(("progress", summary.steps_done))
            last = time.monotonic()

    try:
        with Store(store_path) as store:
            summary = run_into_store(config, store, stop=stop, on_step=progress, run_id=run_id)
        sender.send(("done", summary))
    except Exception as e:
        sender.send(("error", f"{e} ({type(e).__name__})"))
    finally:
        sender.close()
