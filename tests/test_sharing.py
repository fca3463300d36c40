"""One run per experiment and fair shares on a public server: a config already training is joined, a stored one
is shown, one address holds one slot, and a run's chart data is read once for all its viewers. Real processes,
a real store."""

import threading
import time

import pytest
from streamlit.runtime.context import StreamlitHeaders

from diagnostics import budget
from diagnostics.config import ConfigError, RunConfig
from diagnostics.lessons import lesson, lesson_configs
from diagnostics.limits import FORWARDED_HEADER_ENV, ServerLimits, client_address
from diagnostics.live import QueueFull, RunManager
from diagnostics.runner import run_into_store
from diagnostics.store import Store
from tests.waiting import wait_for

SMALL = RunConfig(hidden_size=8, batch_size=8, seq_len=5, steps=5, record_every=1)
LONG = SMALL.replace(steps=100_000)


def make(tmp_path, **limits) -> RunManager:
    # LONG runs are the test's way of keeping a slot busy: the caps on one run's total cost do not apply here.
    return RunManager(tmp_path / "runs.sqlite",
                      ServerLimits(**{"max_run_minutes": 0, "max_run_megabytes": 0, **limits}))


def test_visitors_who_open_one_experiment_watch_one_run(tmp_path):
    manager = make(tmp_path, max_runs=2)
    opened = [manager.open(LONG, session=f"student-{k}", address=f"10.0.0.{k}") for k in range(30)]
    runs = {id(o.live) for o in opened}
    assert len(runs) == 1 and [o.joined for o in opened] == [False] + [True] * 29
    run = opened[0].live
    assert manager.viewer_count(run) == 30 and run.owner == "student-0"
    wait_for(lambda: run.run_id is not None and run.steps_done > 0)
    assert [r.id for r in manager.store.list_runs()] == [run.run_id]  # trained once
    manager.shutdown()


def test_a_shared_run_stops_only_when_its_last_viewer_leaves(tmp_path):
    manager = make(tmp_path)
    run = manager.submit(LONG, owner="teacher")
    assert manager.submit(LONG, owner="student") is run
    wait_for(lambda: run.steps_done > 0)
    assert manager.leave(run, "teacher") is False  # the student still watches: it keeps training
    steps = run.steps_done
    wait_for(lambda: run.steps_done > steps)
    assert not run.stop_event.is_set()
    assert manager.leave(run, "student") is True
    wait_for(lambda: run.state == "done")
    assert run.summary.status == "stopped"


def test_a_finished_experiment_is_shown_from_the_store_and_fresh_trains_it_again(tmp_path):
    manager = make(tmp_path)
    first = manager.open(SMALL, session="a").live
    wait_for(lambda: first.state == "done")
    again = manager.open(SMALL, session="b")
    assert (again.live, again.stored_run) == (None, first.run_id)
    fresh = manager.open(SMALL, session="b", fresh=True).live
    wait_for(lambda: fresh.state == "done")
    assert fresh.run_id != first.run_id and fresh.summary.final_loss == first.summary.final_loss  # seeded
    other_seed = manager.open(SMALL.replace(seed=1), session="b")
    assert other_seed.stored_run is None and other_seed.live is not None


def test_a_stopped_run_is_not_joined(tmp_path):
    manager = make(tmp_path)
    run = manager.submit(LONG, owner="a")
    manager.stop(run)
    newer = manager.submit(LONG, owner="b")
    assert newer is not run and set(newer.viewers) == {"b"}
    manager.shutdown()


def test_one_visitor_with_ten_long_links_holds_one_slot(tmp_path):
    """The default limits: one run training per address, three training or waiting; the rest are refused."""
    manager = make(tmp_path, max_runs=2)
    accepted, refused = [], []
    for k in range(10):
        try:
            accepted.append(manager.submit(LONG.replace(seed=k), owner=f"tab-{k}", address="203.0.113.7"))
        except QueueFull as e:
            refused.append(str(e))
    assert len(accepted) == 3 and len(refused) == 7
    assert refused[0] == ("You already have 3 runs training or waiting on this server (at most 3 per visitor "
                          "address, so a class shares it fairly). Stop one of them, or wait until one ends.")
    wait_for(lambda: accepted[0].state == "running")
    time.sleep(1.5)  # a second slot is free, yet this address's other runs wait
    assert [r.state for r in accepted] == ["running", "queued", "queued"]
    other = manager.submit(SMALL, owner="student", address="198.51.100.2")
    wait_for(lambda: other.state == "done")  # another visitor gets the free slot at once
    assert other.summary.status == "completed"
    assert [r.state for r in accepted] == ["running", "queued", "queued"]
    manager.stop(accepted[0])
    wait_for(lambda: accepted[1].state == "running")
    assert accepted[2].state == "queued"
    manager.shutdown()


def test_lifting_the_per_address_limits_lets_one_address_use_every_slot(tmp_path):
    manager = make(tmp_path, max_runs=2, training_per_address=0, live_per_address=0)
    runs = [manager.submit(LONG.replace(seed=k), owner=f"tab-{k}") for k in range(4)]
    wait_for(lambda: [r.state for r in runs] == ["running", "running", "queued", "queued"])
    manager.shutdown()


def test_a_run_longer_than_the_public_cap_is_refused_with_what_fits(tmp_path):
    manager = RunManager(tmp_path / "runs.sqlite", ServerLimits(max_run_minutes=1.0))
    with pytest.raises(ConfigError) as err:
        manager.submit(RunConfig(cell="lstm", hidden_size=256, seq_len=200, steps=100_000), owner="a")
    message = str(err.value)
    assert message.startswith("This run is too long for this server: 100000 steps of lstm H256x1")
    assert "(allowed: 1 min)" in message and "use fewer steps (about " in message
    fits = int(message.split("(about ")[1].split(" ")[0])
    assert manager.refusal(RunConfig(cell="lstm", hidden_size=256, seq_len=200, steps=fits)) is None
    assert manager.refusal(RunConfig(cell="lstm", hidden_size=256, seq_len=200, steps=fits + 1)) is not None
    assert manager.store.list_runs() == []


def from_threads(read, count: int = 30) -> list:
    """What `count` viewers polling at once get: `read()` called from that many threads together."""
    results = []
    threads = [threading.Thread(target=lambda: results.append(read())) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_runs_chart_data_is_read_once_for_all_its_viewers_until_it_changes(tmp_path):
    manager = make(tmp_path)
    run = manager.submit(SMALL, owner="a")
    wait_for(lambda: run.state == "done")
    results = from_threads(lambda: manager.charts.get(run.run_id))
    assert manager.charts.computed == 1 and all(r is results[0] for r in results)
    assert results[0].loss["step"].tolist() == list(range(1, 6))
    writer = manager.store.writer(run.run_id)  # the run changes: the next reader gets the new rows
    writer.add(6, metrics=[(6, "loss", None, "", 0.5)])
    writer.flush()
    assert manager.charts.get(run.run_id).loss["step"].max() == 6 and manager.charts.computed == 2


def test_a_runs_chart_specs_are_built_once_for_all_its_viewers_until_it_changes(tmp_path):
    manager = make(tmp_path)
    run = manager.submit(SMALL, owner="a")
    wait_for(lambda: run.state == "done")
    results = from_threads(lambda: manager.charts.specs(run.run_id))
    assert (manager.charts.computed, manager.charts.built) == (1, 1)
    assert all(specs is results[0][1] for _, specs in results)
    assert manager.charts.get(run.run_id) is results[0][0]  # the same reading serves data and specs
    writer = manager.store.writer(run.run_id)
    writer.add(6, metrics=[(6, "loss", None, "", 0.5)])
    writer.flush()
    data, specs = manager.charts.specs(run.run_id)
    assert (manager.charts.computed, manager.charts.built) == (2, 2)
    loss = next(spec for row in specs for spec in row if spec.name == "loss_chart")
    assert loss.datasets["data-0"]["step"].max() == 6


def test_a_lesson_run_is_pinned_once_trained_and_other_runs_are_not(tmp_path):
    manager = make(tmp_path)
    config = lesson(1).variants[0].config  # diverges within a few steps
    assert config in lesson_configs()
    lesson_run, own = manager.submit(config, owner="teacher"), manager.submit(SMALL, owner="student")
    wait_for(lambda: lesson_run.state == own.state == "done")
    assert lesson_run.summary.status == "diverged" and manager.store.get_run(lesson_run.run_id).pinned
    assert own.summary.status == "completed" and not manager.store.get_run(own.run_id).pinned
    again = manager.open(config, session="student", fresh=True).live  # fresh reruns do not pile up pinned
    wait_for(lambda: again.state == "done")
    assert again.run_id != lesson_run.run_id and not manager.store.get_run(again.run_id).pinned


def test_lesson_runs_stored_before_the_server_started_are_pinned_when_it_starts(tmp_path):
    config = lesson(1).variants[0].config
    with Store(tmp_path / "runs.sqlite") as store:
        run_id = run_into_store(config, store).run_id  # as the CLI trains it: unpinned
        assert not store.get_run(run_id).pinned
    assert make(tmp_path).store.get_run(run_id).pinned


def test_a_run_larger_than_the_whole_store_quota_is_refused_before_it_starts(tmp_path):
    manager = make(tmp_path, store_megabytes=0.01)
    problem = manager.refusal(SMALL.replace(steps=2000))
    assert problem.startswith("this run is too large for this server's store: about ") and "(GFL_STORE_MB)" in problem
    with pytest.raises(ConfigError):
        manager.submit(SMALL.replace(steps=2000), owner="visitor")
    assert manager.store.list_runs() == []


def trained(manager: RunManager, config: RunConfig) -> int:
    run = manager.submit(config, owner="visitor")
    wait_for(lambda: run.state == "done")
    assert run.error is None, run.error
    return run.run_id


def test_a_full_store_makes_room_by_pruning_its_oldest_unpinned_runs(tmp_path):
    filler = SMALL.replace(steps=200)
    first = make(tmp_path)
    oldest, pinned, _ = (trained(first, filler.replace(seed=k)) for k in (1, 2, 3))
    first.store.pin(pinned)
    used = first.store.used_bytes()
    # A quota the store already fills: the next run must make room for its estimated size.
    manager = make(tmp_path, store_megabytes=used / 1e6)
    new = trained(manager, SMALL.replace(seed=4))
    left = {r.id for r in manager.store.list_runs()}
    assert oldest not in left and {pinned, new} <= left  # the oldest unpinned went first; pinned runs stay
    assert manager.store.used_bytes() <= used  # the quota holds: the new run's estimate covers what it wrote


def test_a_store_full_of_pinned_runs_refuses_a_new_run_and_deletes_nothing(tmp_path):
    first = make(tmp_path)
    kept = [trained(first, SMALL.replace(seed=k)) for k in (1, 2)]
    for run_id in kept:
        first.store.pin(run_id)
    unpinned = trained(first, SMALL.replace(seed=3))
    # Room for about one and a half runs: the two pinned ones already take more, so pruning cannot help.
    manager = make(tmp_path, store_megabytes=1.5 * budget.run_bytes(SMALL) / 1e6)
    run = manager.submit(SMALL.replace(seed=4), owner="visitor")
    wait_for(lambda: run.state == "done")
    assert run.run_id is None and run.error.startswith("The run store is full: pinned runs, runs in training and "
                                                       "runs visitors are looking at leave no room for this one")
    assert "(GFL_STORE_MB)" in run.error and run.error.endswith("; nothing was recorded")
    assert [r.id for r in manager.store.list_runs()] == [unpinned, *kept[::-1]]  # not even the unpinned one went


def test_lifting_the_store_quota_prunes_nothing(tmp_path):
    first = make(tmp_path)
    old = trained(first, SMALL.replace(seed=1))
    manager = make(tmp_path, store_megabytes=0)
    new = trained(manager, SMALL.replace(seed=2))
    assert [r.id for r in manager.store.list_runs()] == [new, old]


@pytest.mark.parametrize("variable, raw, message", [
    ("GFL_MAX_RUNS", "many", "GFL_MAX_RUNS='many' is not valid: runs training at once (one per core of the "
                             "reference server) must be a whole number of at least 1"),
    ("GFL_MAX_RUNS", "0", "must be a whole number of at least 1"),
    ("GFL_LIVE_PER_ADDRESS", "-1", "must be a whole number of at least 0 (0 lifts the limit)"),
    ("GFL_MAX_RUN_MINUTES", "nan", "must be a number of at least 0 (0 lifts the limit)"),
], ids=["text", "zero-slots", "negative", "nan"])
def test_a_bad_limit_in_the_environment_is_named(monkeypatch, variable, raw, message):
    monkeypatch.setenv(variable, raw)
    with pytest.raises(ValueError) as err:
        ServerLimits.from_env()
    assert message in str(err.value)


@pytest.mark.parametrize("header, headers, expected", [
    ("", {"X-Forwarded-For": "203.0.113.9"}, "10.0.0.1"),  # not trusted unless the operator names it
    ("X-Forwarded-For", {"x-forwarded-for": "198.51.100.4, 203.0.113.9"}, "203.0.113.9"),  # the proxy's entry
    ("X-Real-IP", {"X-Real-IP": "2001:db8::1"}, "2001:db8::1"),
    ("X-Forwarded-For", {}, "10.0.0.1"),
    ("X-Forwarded-For", {"X-Forwarded-For": "![x](http://evil/)"}, "10.0.0.1"),  # not an address: ignored
], ids=["untrusted", "last-entry", "ipv6", "missing", "garbage"])
def test_the_client_address_comes_from_the_proxy_header_only_when_the_operator_names_it(header, headers, expected):
    assert client_address("10.0.0.1", headers, {FORWARDED_HEADER_ENV: header}) == expected


def test_a_forwarding_header_sent_twice_counts_the_line_the_proxy_added_last():
    """Streamlit's headers give a repeated header's first line by default: the one a visitor may have written."""
    headers = StreamlitHeaders([("X-Forwarded-For", "198.51.100.4"), ("x-forwarded-for", "203.0.113.9")])
    assert client_address("10.0.0.1", headers, {FORWARDED_HEADER_ENV: "X-Forwarded-For"}) == "203.0.113.9"


def test_a_lesson_pages_variants_train_side_by_side_while_a_visitors_own_runs_take_turns(tmp_path):
    """Lesson runs are the class's shared experiments: one address opening a lesson page trains its variants in
    parallel (slots allowing) and they do not use up that address's own share."""
    manager = make(tmp_path, max_runs=4)
    irnn = lesson("irnn")
    variants = [manager.submit(v.config, owner="teacher", address="203.0.113.7") for v in irnn.variants]
    wait_for(lambda: [r.state for r in variants] == ["running", "running"])
    own = [manager.submit(LONG.replace(seed=k), owner="student", address="198.51.100.9") for k in range(2)]
    wait_for(lambda: own[0].state == "running")
    mine = manager.submit(LONG.replace(seed=7), owner="teacher", address="203.0.113.7")
    wait_for(lambda: mine.state == "running")  # the lesson's two runs are not the teacher's own share
    manager.stop(mine)
    time.sleep(1.5)
    assert own[1].state == "queued"  # a slot is free, yet a visitor's second own run waits: one per address
    manager.shutdown()


def test_a_lesson_with_three_variants_leaves_a_visitors_own_share_whole_but_a_fresh_lesson_run_uses_it(tmp_path):
    manager = make(tmp_path, max_runs=2)
    address = "203.0.113.8"
    variants = [manager.submit(v.config, owner="teacher", address=address) for v in lesson("activations").variants]
    assert [run.lesson_run for run in variants] == [True] * 3
    own = [manager.submit(LONG.replace(seed=k), owner="teacher", address=address) for k in range(3)]  # all fit
    with pytest.raises(QueueFull):  # the address's own three are its share
        manager.submit(LONG.replace(seed=9), owner="teacher", address=address)
    for run in own:
        manager.stop(run)
    fresh = [manager.submit(lesson("activations").variants[0].config, owner="teacher", address=address, fresh=True)
             for _ in range(3)]
    assert [run.lesson_run for run in fresh] == [False] * 3  # trained fresh: the visitor's own
    with pytest.raises(QueueFull):
        manager.submit(LONG.replace(seed=10), owner="teacher", address=address)
    manager.shutdown()
