"""Live runs for the dashboard: background workers, a server-wide cap with a fair queue, shared runs, Stop.

Workers never touch the UI; they train into the store, and pages poll the store and a `LiveRun`'s
progress. One `RunManager` serves the whole server, so the cap holds across browser sessions.

One run per experiment: runs are seeded, so a config already training is joined (every visitor who opens it
watches the same run) rather than trained again; the page shows a stored finished run of the config instead of
submitting it at all. A shared run stops when the last of its viewers leaves it, never because one of them did.
Fair shares: at most `ServerLimits.training_per_address` runs train at once for one client address (its other
runs wait even when a slot is free) and `live_per_address` train or wait; see `limits`.

Each run trains in a process of its own (forked from a server that has imported torch already, so it starts in
about a tenth of a second). In a thread of the server's process, a run shared the GIL with every page drawing
charts: a watched LSTM trained 3–6× slower than an unwatched one. A thread per run stays in the server to wait
for its turn, relay progress and notice a process that died. As with any multiprocessing, a script that starts
runs itself must do so under `if __name__ == "__main__":`, since each run's process imports the main module.
"""

from __future__ import annotations

import atexit
import hmac
import itertools
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from . import budget
from .chartcache import SharedChartData
from .config import ConfigError, RunConfig, sentence
from .description import describe
from .lessons import lesson_configs, lesson_paces
from .limits import ServerLimits
from .pausing import Pause
from .runner import OwnerGone, run_into_store, use_torch_threads
from .store import Store, StoreError
from .summary import RunSummary

# The server operator's secret: whoever gives it may delete any run from the dashboard (unset: nobody may, bar
# the session that made a run; the CLI on the server's own machine deletes freely).
OPERATOR_TOKEN_ENV = "GFL_OPERATOR_TOKEN"
LOCAL = "local"  # the client address of a visitor on this machine (Streamlit reports none for loopback)
KEEP_DONE = 100  # finished runs kept in memory for their pages' final view; older ones are in the store only
SHOWN_KEPT_SECONDS = 3600.0  # a stored run shown to a visitor is not pruned for this long
PROGRESS_SECONDS = 0.1  # a run's process reports its step count at most this often
ETA_AFTER_SECONDS = 1.0  # a rate over a shorter stretch of training is mostly start-up noise
# forkserver, not fork: the server has Tornado and Streamlit threads whose locks a plain fork could copy held.
_PROCESSES = multiprocessing.get_context("forkserver")
LESSON_CONFIGS = lesson_configs()
LESSON_PACES = lesson_paces()  # lessons trained slowly enough to watch (steps per second)
_PROCESSES.set_forkserver_preload(["diagnostics.runner", "diagnostics.warm_start"])  # see warm_start


@dataclass
class LiveRun:
    """One submitted run as the page sees it; mutated only by its worker thread."""

    handle: int
    owner: str  # the browser session that started it
    config: RunConfig
    address: str = LOCAL  # of the client that started it, for the per-address limits
    # A lesson's own run, opened (not trained fresh): the class's shared experiment, outside the per-address
    # shares; a fresh run of a lesson config is the visitor's own like any other.
    lesson_run: bool = False
    state: str = "queued"  # queued | running | done
    run_id: int | None = None
    steps_done: int = 0
    steps_per_second: float = 0.0
    summary: RunSummary | None = None
    error: str | None = None
    pid: int | None = None  # of the process that trains it
    stop_event: multiprocessing.synchronize.Event = field(default_factory=lambda: _PROCESSES.Event())
    # Set when the server exits: the run's process keeps what it wrote but does not finish the run, which then
    # reads back as "interrupted" (nobody stopped it; its server went away).
    orphan_event: multiprocessing.synchronize.Event = field(default_factory=lambda: _PROCESSES.Event())
    pause: Pause = field(default_factory=lambda: Pause(_PROCESSES))  # its owner may pause, step and resume it
    last_seen: float = field(default_factory=time.monotonic)  # when a page watching it last polled it
    viewers: dict[str, float] = field(default_factory=dict)  # session watching it -> when its page last polled
    first_progress: tuple[float, int] | None = None  # (time, steps) of the run's first progress report

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate measured since training began (not since the run was queued or its process
        started); None until that rate rests on at least ETA_AFTER_SECONDS of training."""
        if self.state != "running" or self.steps_per_second <= 0 or self.paused:
            return None
        return (self.config.steps - self.steps_done) / self.steps_per_second

    @property
    def paused(self) -> bool:
        return self.pause.paused.is_set()

    @property
    def held(self) -> bool:
        """Paused and holding between steps, its steps committed (a pause takes effect after the current step)."""
        return self.paused and self.pause.holding.is_set()


@dataclass(frozen=True)
class Opened:
    """The run a visitor's request led to: a stored one, or a live one they started or joined."""

    live: LiveRun | None = None
    stored_run: int | None = None
    joined: bool = False  # the live run was started by another visitor


class QueueFull(Exception):
    """The server's waiting line, or this address's share of it, is full; the message says what to do."""


class RunManager:
    """Starts runs in worker threads, at most `limits.max_runs` at a time; later ones wait, first in first out
    among the addresses that may start one."""

    def __init__(self, store_path: str | os.PathLike | None = None, limits: ServerLimits | None = None):
        self.store = Store(store_path)
        self.charts = SharedChartData(self.store)  # one reading of a run's chart data for all its viewers
        self.limits = ServerLimits.from_env() if limits is None else limits
        self.max_concurrent = self.limits.max_runs
        self.abandoned_seconds = self.limits.abandoned_seconds
        self._turn = threading.Condition()  # guards everything below; workers wait on it for their turn
        self._queue: deque[int] = deque()
        self._running = 0
        self._runs: dict[int, LiveRun] = {}
        self._done: deque[int] = deque()
        self._handles = itertools.count(1)
        self._threads: list[threading.Thread] = []
        self._owners: dict[int, str] = {}  # run id -> the browser session that made it, for this server's life
        self._by_config: dict[RunConfig, int] = {}  # config -> handle of its live run, which newcomers join
        self._training: Counter[str] = Counter()  # address -> its runs holding a slot
        self._shown: dict[int, float] = {}  # stored run id -> when `open` last showed it to a visitor
        for config in LESSON_CONFIGS:  # lesson runs trained before pinning existed (or by the CLI) are kept too
            if (run_id := self.store.find_finished(config.to_dict())) is not None:
                self._pin_lesson_run(run_id)
        # A worker killed inside torch at interpreter exit aborts the process; stop them cleanly instead.
        atexit.register(self.shutdown)

    def submit(self, config: RunConfig, owner: str, address: str | None = None, fresh: bool = False) -> LiveRun:
        """Join the live run of `config` if there is one (unless `fresh`), else queue a new run for `owner` (a
        browser session id) at `address` (its client's, None on this machine). A config too big or too long to
        train here raises ConfigError, and a full queue QueueFull, before anything is queued."""
        if (problem := self.refusal(config)) is not None:
            raise ConfigError(sentence(problem))
        address = address or LOCAL
        with self._turn:
            shared = None if fresh else self._joinable(config)
            if shared is not None:
                shared.last_seen = shared.viewers[owner] = time.monotonic()
                return shared
            self._check_room(address)
            pace = LESSON_PACES.get(config)
            run = LiveRun(handle=next(self._handles), owner=owner, config=config, address=address,
                          lesson_run=config in LESSON_CONFIGS and not fresh,
                          viewers={owner: time.monotonic()}, pause=Pause(_PROCESSES, 1 / pace if pace else 0.0))
            self._runs[run.handle] = run
            self._queue.append(run.handle)
            self._by_config[config] = run.handle
            self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(target=self._work, args=(run,), name=f"gfl-run-{run.handle}", daemon=True)
            self._threads.append(thread)
        thread.start()
        return run

    def open(self, config: RunConfig, session: str, address: str | None = None, fresh: bool = False) -> Opened:
        """What a visitor who asks for `config` gets: its stored finished run (runs are seeded: training it again
        gives the same numbers), else its live run to join, else a new run; `fresh` always trains a new one."""
        if not fresh and (run_id := self.store.find_finished(config.to_dict())) is not None:
            with self._turn:
                self._shown[run_id] = time.monotonic()  # not pruned while its visitors look at it
            return Opened(stored_run=run_id)
        run = self.submit(config, session, address, fresh)
        return Opened(live=run, joined=run.owner != session)

    def refusal(self, config: RunConfig) -> str | None:
        """Why this server will not train `config` (one step too big for the machine, or the whole run longer or
        larger than the public caps), None when it will: what `submit` refuses and the Lab disables Train for."""
        quota = self.limits.store_megabytes * 1e6
        if quota and (needed := budget.run_bytes(config)) > quota:
            return (f"this run is too large for this server's store: about {needed / 1e6:.0f} MB, and the whole "
                    f"store may hold {quota / 1e6:.0f} MB (GFL_STORE_MB); use fewer steps, a larger record_every or "
                    "a smaller model")
        return budget.too_big(config) or budget.over_run_limits(config, self.limits)

    def _joinable(self, config: RunConfig) -> LiveRun | None:
        run = self._runs.get(self._by_config.get(config, 0))
        return run if run is not None and self._live(run) else None

    def _live(self, run: LiveRun) -> bool:
        return run.state != "done" and not run.stop_event.is_set()

    def _check_room(self, address: str) -> None:
        per_address = self.limits.live_per_address
        mine = sum(1 for run in self._runs.values()
                   if run.address == address and self._live(run) and not run.lesson_run)
        if per_address and mine >= per_address:
            raise QueueFull(f"You already have {mine} runs training or waiting on this server (at most "
                            f"{per_address} per visitor address, so a class shares it fairly). Stop one of them, "
                            "or wait until one ends.")
        if len(self._queue) >= self.limits.max_waiting:
            raise QueueFull(f"The server is busy: {len(self._queue)} runs are waiting for "
                            f"{self.max_concurrent} training slot(s). Try again in a few minutes.")

    def get(self, handle: int) -> LiveRun | None:
        with self._turn:
            return self._runs.get(handle)

    def may_delete(self, run_id: int, session: str, token: str | None = None) -> bool:
        """Only the session that made a run, or the operator with their token, may delete it: a visitor of a public
        server must not remove what another made."""
        with self._turn:
            owner = self._owners.get(run_id)
        expected = os.environ.get(OPERATOR_TOKEN_ENV, "")
        by_operator = bool(expected) and token is not None and hmac.compare_digest(token.encode(), expected.encode())
        return owner == session or by_operator

    def touch(self, run: LiveRun, session: str | None = None) -> None:
        """A page is still watching the run (called on every poll; `session` names whose)."""
        with self._turn:
            run.last_seen = time.monotonic()
            if session in run.viewers:
                run.viewers[session] = run.last_seen

    def queue_position(self, run: LiveRun) -> int | None:
        """1-based place in the waiting line, None once running or done."""
        with self._turn:
            return self._queue.index(run.handle) + 1 if run.handle in self._queue else None

    def leave(self, run: LiveRun, session: str) -> bool:
        """`session` is done with `run`: the last viewer stops it (True) and keeps watching it end; anyone else
        only leaves it (False), and it keeps training for the others: no visitor stops what others are watching."""
        with self._turn:
            alone = set(run.viewers) <= {session}
            if not alone:
                run.viewers.pop(session, None)
        if alone:
            self.stop(run)
        return alone

    def rejoin(self, run: LiveRun, session: str) -> bool:
        """`session` watches `run` again (after leaving it), if it is still training or waiting."""
        with self._turn:
            if not self._live(run):
                return False
            run.last_seen = run.viewers[session] = time.monotonic()
            return True

    def pause(self, run: LiveRun, session: str) -> bool:
        """Hold `run` after its current step; only the session that started it may (a shared run pauses for
        every viewer). False when not allowed or not training."""
        if not self._controls(run, session):
            return False
        run.pause.pause()
        return True

    def resume(self, run: LiveRun, session: str) -> bool:
        if not self._controls(run, session):
            return False
        with self._turn:
            run.first_progress, run.steps_per_second = None, 0.0  # the rate restarts: the pause was no training
        run.pause.resume()
        return True

    def step(self, run: LiveRun, session: str) -> bool:
        """Let a paused run take one more optimiser step (recorded as every step is)."""
        if not self._controls(run, session) or not run.paused:
            return False
        run.pause.step()
        return True

    def _controls(self, run: LiveRun, session: str) -> bool:
        with self._turn:
            return run.owner == session and run.state == "running"

    def viewer_count(self, run: LiveRun) -> int:
        """Sessions watching the run now: those whose page polled it within the abandon time."""
        now = time.monotonic()
        with self._turn:
            return sum(1 for seen in run.viewers.values() if now - seen <= self.abandoned_seconds)

    def stop(self, run: LiveRun) -> None:
        """Ask the run to end after its current step (or not to start, if still queued)."""
        run.stop_event.set()
        with self._turn:
            if self._by_config.get(run.config) == run.handle:
                del self._by_config[run.config]  # a newcomer gets a new run, not one that is ending
            self._turn.notify_all()  # a queued run leaves the line at once

    def shutdown(self, timeout: float = 10.0) -> None:
        """Orphan every run and wait for the workers: each keeps its steps and reads back as "interrupted"."""
        with self._turn:
            runs, threads = list(self._runs.values()), list(self._threads)
        for run in runs:
            run.orphan_event.set()  # a training run's process notices at its next step; Stop would finish it
            if run.state == "queued":
                self.stop(run)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))

    def _abandoned(self, run: LiveRun) -> bool:
        return time.monotonic() - run.last_seen > self.abandoned_seconds

    def _next_to_start(self) -> int | None:
        """The first queued run whose address may start one more, when a slot is free. Lesson runs (opened, not
        trained fresh) are the class's shared experiments, not a visitor's own: they neither wait for nor count
        against the per-address shares, so a lesson page's variants train side by side when slots are free."""
        if self._running >= self.max_concurrent:
            return None
        per_address = self.limits.training_per_address
        for handle in self._queue:
            run = self._runs[handle]
            if self._live(run) and not self._abandoned(run) and (
                    not per_address or run.lesson_run or self._training[run.address] < per_address):
                return handle
        return None

    def _wait_for_turn(self, run: LiveRun) -> bool:
        """Block until this run may start and a slot is free (True), or it is stopped first (False)."""
        with self._turn:
            while self._next_to_start() != run.handle:
                if run.stop_event.is_set() or self._abandoned(run):
                    self._queue.remove(run.handle)
                    self._turn.notify_all()
                    return False
                self._turn.wait(timeout=1.0)  # also wakes to notice an abandoned run
            self._queue.remove(run.handle)
            self._running += 1
            self._training[run.address] += not run.lesson_run
            self._turn.notify_all()  # the next in line may fit too
            return True

    def _work(self, run: LiveRun) -> None:
        if not self._wait_for_turn(run):
            self._finish(run, took_slot=False)
            return
        try:
            run.state = "running"
            if (full := self._make_room(run)) is not None:
                run.error = full
                return
            self._follow(run, *self._start_process(run))  # the process registers the run in the store itself
        except Exception as e:  # shown on the page; the stored steps stay readable
            run.error = f"{e} ({type(e).__name__})"
        finally:
            if run.error is not None:
                kept = "everything it recorded is kept" if run.run_id is not None else "nothing was recorded"
                run.error = f"{run.error}; {kept}"
            self._finish(run, took_slot=True)

    def _make_room(self, run: LiveRun) -> str | None:
        """Prune the store's oldest unpinned runs so that this run and what the runs still training will write
        (their estimates, less what they wrote so far) fit the quota; why not, when pinned runs, training runs and
        runs visitors were shown lately leave no room (then nothing is deleted: pruning would not help)."""
        quota = self.limits.store_megabytes * 1e6
        if not quota:
            return None
        needed = budget.run_bytes(run.config)
        now = time.monotonic()
        with self._turn:
            training = [r for r in self._runs.values() if r.state == "running" and r is not run]
            keep = {r.run_id for r in self._runs.values() if r.run_id is not None}  # live, or on a page now
            self._shown = {i: shown for i, shown in self._shown.items() if now - shown <= SHOWN_KEPT_SECONDS}
            keep |= set(self._shown)
        coming = sum(budget.run_bytes(r.config) * max(1 - r.steps_done / r.config.steps, 0) for r in training)
        if self.store.prune(int(quota - needed - coming), keep=frozenset(keep)) is not None:
            return None
        return (f"The run store is full: pinned runs, runs in training and runs visitors are looking at leave no "
                f"room for this one (about {needed / 1e6:.0f} MB) within its {quota / 1e6:.0f} MB quota "
                "(GFL_STORE_MB). The server's operator can raise the quota, or unpin or delete runs")

    def _pin_lesson_run(self, run_id: int) -> None:
        """The first finished run of a lesson's config stays for every later visitor of its link; a failure to
        pin it (a busy store) costs only that, never the run's result."""
        try:
            self.store.pin_if_first(run_id)
        except StoreError:
            pass

    def _start_process(self, run: LiveRun) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        receiver, sender = _PROCESSES.Pipe(duplex=False)
        process = _PROCESSES.Process(target=_train_in_process, name=f"gfl-run-{run.handle}", daemon=True,
                                     args=(run.config, str(self.store.path), run.stop_event, run.orphan_event,
                                           run.pause, sender))
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
                except EOFError:  # died without a word: killed (out of memory?) or crashed, or orphaned
                    process.join()
                    if run.orphan_event.is_set():
                        return  # the server is exiting: the run keeps its steps and reads back as interrupted
                    killed = ", killed by the system, perhaps for lack of memory" if process.exitcode == -9 else ""
                    run.error = f"the run's training process ended unexpectedly (exit code {process.exitcode}{killed})"
                    return
                if kind == "registered":
                    run.run_id = value
                    with self._turn:
                        self._owners[value] = run.owner
                    continue
                if kind == "progress":
                    _progress(run, value)
                    continue
                if kind == "done":
                    run.summary, run.steps_done = value, value.steps_done
                    if run.config in LESSON_CONFIGS and value.status in ("completed", "diverged"):
                        self._pin_lesson_run(run.run_id)  # reused by every later visitor of its link
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
            self._training[run.address] -= took_slot and not run.lesson_run
            if self._by_config.get(run.config) == run.handle:
                del self._by_config[run.config]  # from now on its stored result is shown instead
            self._done.append(run.handle)
            while len(self._done) > KEEP_DONE:
                self._runs.pop(self._done.popleft(), None)
            self._turn.notify_all()


def _progress(run: LiveRun, steps: int) -> None:
    """Steps done, and the rate since the first report: the process's start-up and the queue do not count."""
    now = time.perf_counter()
    run.steps_done = steps
    if run.first_progress is None:
        run.first_progress = (now, steps)
        return
    since, at = run.first_progress
    if now - since >= ETA_AFTER_SECONDS and steps > at:
        run.steps_per_second = (steps - at) / (now - since)


def _train_in_process(config: RunConfig, store_path: str, stop, orphaned, pause: Pause, sender) -> None:
    """A run's own process: register the run, sending ("registered", run_id), train into the store, sending
    ("progress", steps), then ("done", summary) or ("error", message). When the server is gone (killed, or
    exiting) it keeps what it recorded and ends without finishing the run, which reads back as "interrupted"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the server reaches its runs through Stop instead
    use_torch_threads()
    server, last = multiprocessing.parent_process(), 0.0

    def gone() -> bool:
        return orphaned.is_set() or (server is not None and not server.is_alive())

    def progress(summary: RunSummary) -> None:
        nonlocal last
        if gone():
            raise OwnerGone
        if time.monotonic() - last >= PROGRESS_SECONDS or pause.paused.is_set():  # a held step shows at once
            sender.send(("progress", summary.steps_done))
            last = time.monotonic()

    try:
        with Store(store_path) as store:
            # Created by this process, so its death reads as interrupted.
            run_id = store.create_run(config.to_dict(), describe(config).to_dict())
            sender.send(("registered", run_id))
            summary = run_into_store(config, store, stop=stop, on_step=progress, run_id=run_id,
                                     hold=lambda commit: pause.hold(lambda: stop.is_set() or gone(), commit))
        sender.send(("done", summary))
    except OwnerGone:
        pass  # nobody is left to tell
    except Exception as e:
        sender.send(("error", f"{e} ({type(e).__name__})"))
    finally:
        sender.close()
