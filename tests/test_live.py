"""RunManager: background runs, the server-wide cap with its fair queue, shared runs, and Stop."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diagnostics.config import ConfigError, RunConfig
from diagnostics.limits import ServerLimits
from diagnostics.live import LiveRun, QueueFull, RunManager, _progress
from diagnostics.store import Store
from tests.waiting import wait_for

SMALL = RunConfig(hidden_size=8, batch_size=8, seq_len=5, steps=5, record_every=1)
LONG = SMALL.replace(steps=100_000)
# The public caps off (0), bar the ones a test names: these tests are about the queue, not about fair shares.
UNLIMITED = ServerLimits(max_runs=1, training_per_address=0, live_per_address=0, max_run_minutes=0,
                         max_run_megabytes=0)
MAX_WAITING = UNLIMITED.max_waiting


def make(tmp_path, **limits) -> RunManager:
    return RunManager(tmp_path / "runs.sqlite", limits=dataclasses.replace(UNLIMITED, **limits))


def test_a_run_trains_into_the_store_in_the_background(tmp_path):
    manager = make(tmp_path, max_runs=1)
    run = manager.submit(SMALL, owner="tab-1")
    wait_for(lambda: run.state == "done")
    assert run.error is None and run.summary.status == "completed" and run.steps_done == 5
    stored = manager.store.get_run(run.run_id)
    assert (stored.status, stored.steps_done, stored.config["seed"]) == ("completed", 5, 0)
    assert run.owner == "tab-1"


def test_cap_queues_later_runs_in_order_and_stop_frees_the_slot(tmp_path):
    manager = make(tmp_path, max_runs=1)
    first = manager.submit(LONG, owner="a")
    wait_for(lambda: first.state == "running" and first.steps_done > 0)
    second = manager.submit(SMALL, owner="b")
    third = manager.submit(SMALL.replace(seed=3), owner="c")
    assert (manager.queue_position(second), manager.queue_position(third)) == (1, 2)
    assert second.state == "queued" and second.run_id is None

    at_stop = first.steps_done
    manager.stop(first)
    wait_for(lambda: first.state == "done")
    # Stop ends the run after its current step; its process reports progress every 0.1 s, so at_stop may lag
    assert first.summary.status == "stopped" and at_stop <= first.summary.steps_done < LONG.steps
    stored = manager.store.get_run(first.run_id)
    assert (stored.status, stored.steps_done) == ("stopped", first.summary.steps_done)

    wait_for(lambda: third.state == "done")
    assert second.summary.status == third.summary.status == "completed"
    assert second.run_id < third.run_id  # first in, first out
    assert manager.queue_position(third) is None and {first.state, second.state, third.state} == {"done"}


def test_stopping_a_queued_run_means_it_never_starts(tmp_path):
    manager = make(tmp_path, max_runs=1)
    first = manager.submit(LONG, owner="a")
    wait_for(lambda: first.state == "running")
    queued = manager.submit(SMALL, owner="b")
    manager.stop(queued)
    manager.stop(first)
    wait_for(lambda: queued.state == "done")
    wait_for(lambda: first.state == "done")
    assert first.error is None, first.error
    assert queued.run_id is None and [r.id for r in manager.store.list_runs()] == [first.run_id]


def test_the_cap_and_the_limits_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GFL_MAX_RUNS", "3")
    monkeypatch.setenv("GFL_TRAINING_PER_ADDRESS", "0")
    manager = RunManager(tmp_path / "runs.sqlite")
    assert manager.max_concurrent == 3 and manager.limits.training_per_address == 0
    assert manager.limits.lifted("training_per_address") and not manager.limits.lifted("live_per_address")


def test_shutting_the_server_down_leaves_its_runs_interrupted_with_their_steps(tmp_path):
    """Nobody stopped them: their server went away, so they read back as interrupted, not stopped."""
    manager = make(tmp_path, max_runs=2)
    runs = [manager.submit(LONG, owner="a"), manager.submit(LONG.replace(seed=1), owner="b")]
    wait_for(lambda: all(r.steps_done > 0 for r in runs))
    manager.shutdown()
    for run in runs:
        assert run.state == "done" and run.summary is None and run.error is None
        stored = manager.store.get_run(run.run_id)
        assert stored.status == "interrupted" and stored.steps_done > 0
        assert manager.store.load(run.run_id).series("loss").index.max() == stored.steps_done


def test_a_killed_server_leaves_its_runs_interrupted(tmp_path):
    """kill -9 of the dashboard: each run's process notices its server is gone, keeps what it recorded, and does
    not finish the run as "stopped"."""
    db = tmp_path / "runs.sqlite"
    script = (f"import sys, time\nfrom diagnostics.config import RunConfig\nfrom diagnostics.live import RunManager\n"
              f"from diagnostics.limits import ServerLimits\n"
              f"if __name__ == '__main__':\n"
              f"    m = RunManager({str(db)!r}, ServerLimits(max_runs=1, max_run_minutes=0, max_run_megabytes=0))\n"
              f"    r = m.submit(RunConfig.from_json({LONG.to_json()!r}), owner='a')\n"
              f"    while r.steps_done < 20: m.touch(r); time.sleep(0.05)\n"
              f"    print(r.run_id, flush=True)\n"
              f"    time.sleep(600)\n")
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    run_id = int(server.stdout.readline())
    server.kill()
    server.wait()
    store = Store(db)
    wait_for(lambda: store.get_run(run_id).status != "running")
    stored = store.get_run(run_id)
    assert stored.status == "interrupted" and stored.steps_done >= 20


def test_a_queued_run_stopped_as_its_turn_comes_never_starts(tmp_path):
    manager = make(tmp_path, max_runs=1)
    first = manager.submit(LONG, owner="a")
    wait_for(lambda: first.steps_done > 0)
    second = manager.submit(SMALL, owner="b")
    with manager._turn:  # its stop lands without waking it: it wakes only when the first run frees the slot
        second.stop_event.set()
    manager.stop(first)
    wait_for(lambda: second.state == "done")
    assert second.run_id is None and [r.id for r in manager.store.list_runs()] == [first.run_id]


def test_a_process_killed_before_it_registers_its_run_leaves_nothing_running(tmp_path):
    manager = make(tmp_path, max_runs=1)
    doomed = manager.submit(LONG, owner="a")
    wait_for(lambda: doomed.pid is not None, seconds=30)
    os.kill(doomed.pid, signal.SIGKILL)  # at once: usually before the process has made the run's row
    wait_for(lambda: doomed.state == "done")
    assert all(r.status == "interrupted" for r in manager.store.list_runs())  # none stays "running" for ever
    assert doomed.error.startswith("the run's training process ended unexpectedly (exit code -9")


def test_the_eta_counts_from_the_first_progress_report_not_from_the_queue():
    run = LiveRun(handle=1, owner="a", config=LONG, state="running")
    _progress(run, 3)  # the process has just started: no rate yet
    assert (run.steps_per_second, run.eta_seconds) == (0.0, None)
    run.first_progress = (run.first_progress[0] - 2.0, 3)  # two seconds of training later...
    _progress(run, 203)
    assert run.steps_per_second == pytest.approx(100, rel=0.01)
    assert run.eta_seconds == pytest.approx((LONG.steps - 203) / run.steps_per_second)


def test_a_run_nobody_watches_is_stopped_and_frees_its_slot(tmp_path):
    manager = make(tmp_path, abandoned_seconds=1.0)
    watched, left = manager.submit(LONG, owner="a"), manager.submit(LONG.replace(seed=1), owner="b")
    started = time.monotonic()
    while left.state != "done" or time.monotonic() - started < 3.0:  # only the first run's page polls
        manager.touch(watched)
        time.sleep(0.1)
    assert left.run_id is None  # left the queue without ever taking a slot
    assert watched.state == "running"  # watched for three times the abandon time, it still trains...
    wait_for(lambda: watched.state == "done")  # ...until its page stops polling too
    assert watched.summary.status == "stopped"
    assert manager.store.get_run(watched.run_id).status == "stopped"


def test_a_full_queue_refuses_with_a_message(tmp_path):
    manager = make(tmp_path, max_runs=1)
    first = manager.submit(LONG, owner="a")
    wait_for(lambda: first.state == "running")
    waiting = [manager.submit(SMALL.replace(seed=k), owner=f"s{k}") for k in range(MAX_WAITING)]
    with pytest.raises(QueueFull, match=f"The server is busy: {MAX_WAITING} runs are waiting for 1 training slot"):
        manager.submit(SMALL.replace(seed=99), owner="late")  # a new experiment (SMALL itself is queued: joined)
    assert [manager.queue_position(r) for r in waiting] == list(range(1, MAX_WAITING + 1))
    manager.shutdown()
    assert all(r.state == "done" and r.run_id is None for r in waiting)
    assert manager.store.get_run(first.run_id).status == "interrupted"  # the server went, nobody stopped it


def test_a_run_too_big_to_train_is_refused_before_it_queues(tmp_path):
    manager = make(tmp_path, max_runs=1)
    with pytest.raises(ConfigError, match="This run is too big for one training step on this server"):
        manager.submit(SMALL.replace(cell="lstm", hidden_size=512, batch_size=1024, seq_len=1000), owner="a")
    assert manager.store.list_runs() == []
    run = manager.submit(SMALL, owner="a")  # the refused one took no place in the queue
    wait_for(lambda: run.state == "done")
    assert run.summary.status == "completed" and [r.id for r in manager.store.list_runs()] == [run.run_id]


def test_each_run_trains_in_its_own_process_and_a_killed_one_is_reported_and_frees_its_slot(tmp_path):
    manager = make(tmp_path, max_runs=1)
    doomed = manager.submit(LONG, owner="a")
    waiting = manager.submit(SMALL, owner="b")
    wait_for(lambda: doomed.steps_done > 0)
    assert doomed.pid is not None and doomed.pid != os.getpid()
    os.kill(doomed.pid, signal.SIGKILL)  # what the kernel's out-of-memory killer does
    wait_for(lambda: doomed.state == "done")
    assert doomed.summary is None and doomed.error == (
        "the run's training process ended unexpectedly (exit code -9, killed by the system, perhaps for lack of "
        "memory); everything it recorded is kept")
    assert manager.store.get_run(doomed.run_id).status == "interrupted"  # its writer is gone
    wait_for(lambda: waiting.state == "done")
    assert waiting.summary.status == "completed" and waiting.pid not in (None, doomed.pid)


def test_pause_holds_a_run_between_steps_step_takes_exactly_one_and_the_numbers_do_not_change(tmp_path):
    manager = make(tmp_path, max_runs=2)
    config = SMALL.replace(steps=400, record_every=10)
    began = time.monotonic()
    run = manager.submit(config, owner="teacher")
    wait_for(lambda: run.state == "running" and run.steps_done >= 3)
    assert not manager.pause(run, "student") and not run.paused  # only the visitor who started it
    assert manager.pause(run, "teacher") and run.paused
    wait_for(run.pause.holding.is_set)
    held_at = manager.store.get_run(run.run_id).steps_done  # committed where it holds
    wait_for(lambda: run.steps_done == held_at)
    time.sleep(1.0)
    assert run.steps_done == held_at == manager.store.get_run(run.run_id).steps_done and run.eta_seconds is None
    assert manager.step(run, "teacher")
    wait_for(lambda: manager.store.get_run(run.run_id).steps_done == held_at + 1)
    wait_for(run.pause.holding.is_set)
    time.sleep(0.5)
    assert run.steps_done == held_at + 1 == manager.store.get_run(run.run_id).steps_done  # one step, held again
    assert not manager.step(run, "student")
    assert manager.resume(run, "teacher") and not run.paused
    wait_for(lambda: run.state == "done")
    held = 1.5  # at least: the sleeps above while it held
    assert run.summary.status == "completed"
    assert run.summary.train_seconds < time.monotonic() - began - held  # the pause was no training
    straight = manager.submit(config, owner="other", fresh=True)  # the same experiment, never paused
    wait_for(lambda: straight.state == "done")
    losses = [manager.store.load(r.run_id).metrics.query("name == 'loss'")["value"].tolist() for r in (run, straight)]
    assert losses[0] == losses[1] and len(losses[0]) == 400


def test_stop_ends_a_paused_run_and_step_needs_a_pause(tmp_path):
    manager = make(tmp_path)
    run = manager.submit(LONG, owner="a")
    wait_for(lambda: run.state == "running" and run.steps_done > 0)
    assert not manager.step(run, "a")  # not paused: nothing to step
    manager.pause(run, "a")
    wait_for(run.pause.holding.is_set)
    manager.stop(run)
    wait_for(lambda: run.state == "done")
    assert run.summary.status == "stopped" and not manager.pause(run, "a")


def test_a_paced_lesson_shows_each_step_for_its_time_and_keeps_its_numbers(tmp_path):
    from diagnostics.lessons import LESSONS, lesson_paces
    from diagnostics.train import train

    config = LESSONS[0].variants[0].config
    assert lesson_paces() == {config: 1.0}  # lesson 1 explodes within 4 steps: one step a second
    manager = make(tmp_path)
    began = time.monotonic()
    run = manager.submit(config, owner="teacher")
    seen = set()
    while run.state != "done" and time.monotonic() - began < 60:
        if run.run_id is not None:
            seen.add(manager.store.get_run(run.run_id).steps_done)  # each step committed as it is taken
        time.sleep(0.05)
    took = time.monotonic() - began
    assert run.summary.status == "diverged" and run.summary.steps_done == 4
    assert {1, 2, 3} <= seen and took >= 4.0  # each of its four steps shown for a second
    assert run.summary.train_seconds < 1.0  # the waiting is not training time
    unpaced, _ = train(config)
    assert unpaced.steps_done == 4 and unpaced.first_nonfinite == run.summary.first_nonfinite
