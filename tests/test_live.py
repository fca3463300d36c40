"""RunManager: background runs, the server-wide cap with its queue, and Stop."""

import os
import signal
import time

import pytest

from diagnostics.config import ConfigError, RunConfig
from diagnostics.live import MAX_WAITING, QueueFull, RunManager, max_runs_from_env

SMALL = RunConfig(hidden_size=8, batch_size=8, seq_len=5, steps=5, record_every=1)
LONG = SMALL.replace(steps=100_000)


def wait_for(predicate, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail("condition not reached in time")


def test_a_run_trains_into_the_store_in_the_background(tmp_path):
    manager = RunManager(tmp_path / "runs.sqlite", max_concurrent=1)
    run = manager.submit(SMALL, owner="tab-1")
    wait_for(lambda: run.state == "done")
    assert run.error is None and run.summary.status == "completed" and run.steps_done == 5
    stored = manager.store.get_run(run.run_id)
    assert (stored.status, stored.steps_done, stored.config["seed"]) == ("completed", 5, 0)
    assert run.owner == "tab-1"


def test_cap_queues_later_runs_in_order_and_stop_frees_the_slot(tmp_path):
    manager = RunManager(tmp_path / "runs.sqlite", max_concurrent=1)
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
    manager = RunManager(tmp_path / "runs.sqlite", max_concurrent=1)
    first = manager.submit(LONG, owner="a")
    wait_for(lambda: first.state == "running")
    queued = manager.submit(SMALL, owner="b")
    manager.stop(queued)
    manager.stop(first)
    wait_for(lambda: queued.state == "done")
    assert queued.run_id is None and [r.id for r in manager.store.list_runs()] == [first.run_id]


@pytest.mark.parametrize("raw,expected", [("", 2), ("3", 3), ("0", 2), ("many", 2)],
                         ids=["unset", "three", "zero", "text"])
def test_cap_comes_from_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv("GFL_MAX_RUNS", raw)
    assert max_runs_from_env() == expected


def test_shutdown_stops_every_run_and_keeps_its_steps(tmp_path):
    manager = RunManager(tmp_path / "runs.sqlite", max_concurrent=2)
    runs = [manager.submit(LONG, owner="a"), manager.submit(LONG.replace(seed=1), owner="b")]
    wait_for(lambda: all(r.steps_done > 0 for r in runs))
    manager.shutdown()
    for run in runs:
        assert run.state == "done" and run.summary.status == "stopped"
        stored = manager.store.get_run(run.run_id)
        assert stored.status == "stopped" and stored.steps_done == run.summary.steps_done


def test_a_run_nobody_watches_is_stopped_and_frees_its_slot(tmp_path):
    manager = RunManager(tmp_path / "runs.sqlite", max_concurrent=1, abandoned_seconds=1.0)
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
    manager = RunManager(tmp_path / "runs.sqlite", max_concurrent=1)
    first = manager.submit(LONG, owner="a")
    wait_for(lambda: first.state == "running")
    waiting = [manager.submit(SMALL.replace(seed=k), owner=f"s{k}") for k in range(MAX_WAITING)]
    with pytest.raises(QueueFull, match=f"The server is busy: {MAX_WAITING} runs are waiting for 1 training slot"):
        manager.submit(SMALL, owner="late")
    assert [manager.queue_position(r) for r in waiting] == list(range(1, MAX_WAITING + 1))
    manager.shutdown()
    assert all(r.state == "done" and r.run_id is None for r in waiting) and first.summary.status == "stopped"


def test_a_run_too_big_to_train_is_refused_before_it_queues(tmp_path):
    manager = RunManager(tmp_path / "runs.sqlite", max_concurrent=1)
    with pytest.raises(ConfigError, match="This run is too big for one training step on this server"):
        manager.submit(SMALL.replace(cell="lstm", hidden_size=512, batch_size=1024, seq_len=1000), owner="a")
    assert manager.store.list_runs() == []
    run = manager.submit(SMALL, owner="a")  # the refused one took no place in the queue
    wait_for(lambda: run.state == "done")
    assert run.summary.status == "completed" and [r.id for r in manager.store.list_runs()] == [run.run_id]


def test_each_run_trains_in_its_own_process_and_a_killed_one_is_reported_and_frees_its_slot(tmp_path):
    manager = RunManager(tmp_path / "runs.sqlite", max_concurrent=1)
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
