"""The store gives back exactly what was written, refuses foreign files untouched, and stays readable live."""

import io
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from diagnostics.config import RunConfig
from diagnostics.description import ModelDescription, describe, stored_description
from diagnostics.rundata import EVENT_COLUMNS, GATE_COLUMNS, METRIC_COLUMNS, TIME_GRAD_COLUMNS, RunData, frame
from diagnostics import store as store_module
from diagnostics.store import (
    DEFAULT_DB_ENV,
    EXPORT_CHUNK_ROWS,
    SCHEMA_VERSION,
    STALE_SECONDS,
    RunInfo,
    Store,
    StoreError,
    default_db_path,
    strict_json,
)

ROOT = Path(__file__).resolve().parents[1]
NAN, INF = float("nan"), float("inf")
TABLES = {"metrics": METRIC_COLUMNS, "time_grads": TIME_GRAD_COLUMNS, "gates": GATE_COLUMNS, "events": EVENT_COLUMNS}
SPECIAL = [NAN, INF, -INF]


def step_rows(step: int, rng: random.Random) -> dict[str, list[tuple]]:
    """One step's rows in every table, with NaN, +-Inf and NA layers mixed in at seeded places."""
    value = lambda: rng.choice(SPECIAL) if rng.random() < 0.3 else rng.gauss(0.0, 1.0)  # noqa: E731
    return {
        "metrics": [
            (step, "loss", None, "", value()),
            (step, "grad_norm", 0, "rnn.weight_hh_l0", value()),
            (step, "grad_norm", 1, "", value()),
            (step, "grad_norm", None, "readout.weight", value()),
        ],
        "time_grads": [(step, layer, t, value()) for layer in (0, 1) for t in (1, 2, 3)],
        "gates": [(step, 0, gate, t, value(), value(), value()) for gate in ("input", "forget") for t in (1, 2)],
        "events": [
            (step, "nonfinite", "loss", None, None, 1, 0, 0),
            (step, "nonfinite", "hidden", 1, rng.randint(1, 9), rng.randint(0, 5), rng.randint(0, 5), 2),
        ],
    }


def write_run(store: Store, steps: int, seed: int = 0, flush_every: int = 3) -> tuple[int, dict[str, list]]:
    """Write a finished run and return its id with all rows written, per table."""
    rng = random.Random(seed)
    run_id = store.create_run({"seed": seed, "lr": 0.1})
    writer = store.writer(run_id, flush_every=flush_every)
    written = {table: [] for table in TABLES}
    for step in range(1, steps + 1):
        rows = step_rows(step, rng)
        writer.add(step, **rows)
        for table in TABLES:
            written[table] += rows[table]
    writer.close("completed", {"final_loss": 0.5})
    return run_id, written


def expected(written: dict[str, list], since_step: int = 0) -> RunData:
    return RunData(**{t: frame([r for r in written[t] if r[0] > since_step], TABLES[t]) for t in TABLES})


def assert_rundata_equal(got: RunData, want: RunData) -> None:
    for table in TABLES:
        pd.testing.assert_frame_equal(getattr(got, table), getattr(want, table), check_exact=True)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "runs.sqlite") as s:
        yield s


def sql(path: Path, statement: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on a plain connection, as another tool or process would, and commit."""
    with closing(sqlite3.connect(path)) as conn, conn:
        return conn.execute(statement, params).fetchall()


def test_round_trip_keeps_values_and_dtypes(store):
    run_id, written = write_run(store, steps=7)
    data = store.load(run_id)
    assert_rundata_equal(data, expected(written))
    for table in TABLES:
        assert getattr(data, table).dtypes.equals(getattr(RunData(), table).dtypes), table
    values = data.metrics["value"]
    assert values.isna().any() and (values == INF).any() and (values == -INF).any()
    assert data.metrics["layer"].isna().any() and data.events["time_step"].isna().any()


def test_nan_is_stored_as_null_and_read_back_as_nan(store):
    run_id = store.create_run({})
    writer = store.writer(run_id)
    writer.add(1, metrics=[(1, "loss", None, "", NAN), (1, "metric", None, "", INF), (1, "penalty", None, "", -INF)])
    writer.flush()
    stored = sql(store.path, "SELECT value FROM metrics ORDER BY rowid")
    assert stored == [(None,), (INF,), (-INF,)]
    values = store.load(run_id).metrics["value"].tolist()
    assert math.isnan(values[0]) and values[1:] == [INF, -INF]


def test_empty_run_loads_empty_tables_with_contract_dtypes(store):
    data = store.load(store.create_run({}))
    for table in TABLES:
        got, want = getattr(data, table), getattr(RunData(), table)
        assert got.empty and list(got.columns) == TABLES[table] and got.dtypes.equals(want.dtypes)


@pytest.mark.parametrize("since_step", [0, 1, 4, 6, 9], ids=lambda s: f"since{s}")
def test_load_since_step_returns_only_later_steps(store, since_step):
    run_id, written = write_run(store, steps=6)
    data = store.load(run_id, since_step=since_step)
    assert_rundata_equal(data, expected(written, since_step))
    assert sorted(set(data.metrics["step"])) == list(range(since_step + 1, 7))


def test_runs_are_listed_newest_first_with_their_bookkeeping(store):
    first = store.create_run({"name": "a", "lr": NAN})
    second, _ = write_run(store, steps=4)
    runs = store.list_runs()
    assert [r.id for r in runs] == [second, first]
    assert runs[1] == store.get_run(first)
    assert runs[1].config == {"name": "a", "lr": None}
    assert (runs[1].status, runs[1].steps_done, runs[1].summary) == ("running", 0, {})
    assert (runs[0].status, runs[0].steps_done, runs[0].summary) == ("completed", 4, {"final_loss": 0.5})
    created = pd.Timestamp(runs[0].created)
    assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0


def test_finish_records_end_and_makes_summary_strict_json(store):
    run_id = store.create_run({})
    store.finish(run_id, "diverged", 12, {"loss": INF, "nested": [NAN, 1.0]})
    info = store.get_run(run_id)
    assert isinstance(info, RunInfo)
    assert (info.status, info.steps_done, info.summary) == ("diverged", 12, {"loss": None, "nested": [None, 1.0]})


def test_finish_rejects_unknown_status(store):
    run_id = store.create_run({})
    with pytest.raises(StoreError, match="completed, diverged, stopped"):
        store.finish(run_id, "interrupted", 3, {})
    assert store.get_run(run_id).status == "running"


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_run(7),
        lambda s: s.load(7),
        lambda s: s.delete(7),
        lambda s: s.writer(7),
        lambda s: s.finish(7, "completed", 1, {}),
        lambda s: s.export(7, "csv", s.path.parent / "out"),
    ],
    ids=["get_run", "load", "delete", "writer", "finish", "export"],
)
def test_unknown_run_names_it_and_the_file(store, call):
    with pytest.raises(StoreError) as err:
        call(store)
    assert str(err.value) == f"no run 7 in {store.path}; `python -m diagnostics runs` lists them"


def test_delete_removes_that_run_only(store):
    keep, kept_rows = write_run(store, steps=5, seed=1)
    gone, _ = write_run(store, steps=5, seed=2)
    store.delete(gone)
    assert [r.id for r in store.list_runs()] == [keep]
    assert_rundata_equal(store.load(keep), expected(kept_rows))
    for table in TABLES:
        assert sql(store.path, f"SELECT count(*) FROM {table} WHERE run_id = ?", (gone,)) == [(0,)]
    assert store.create_run({}) == gone + 1  # ids are never reused


def test_writer_commits_the_first_step_at_once_then_every_flush_every_steps(store):
    run_id = store.create_run({})
    writer = store.writer(run_id, flush_every=3)
    writer.add(1, metrics=[(1, "loss", None, "", 1.0)])
    assert store.get_run(run_id).steps_done == writer.steps_done == 1  # a live view draws step 1 at once
    for step in range(2, 7):
        writer.add(step, metrics=[(step, "loss", None, "", float(step))])
    assert store.load(run_id).metrics["step"].tolist() == [1, 2, 3, 4]
    assert store.get_run(run_id).steps_done == writer.steps_done == 4
    writer.close("stopped", {})
    assert store.load(run_id).metrics["step"].tolist() == list(range(1, 7))
    assert (store.get_run(run_id).status, store.get_run(run_id).steps_done) == ("stopped", 6)
    with pytest.raises(StoreError, match="closed"):
        writer.add(7)


def test_failed_flush_writes_nothing_and_keeps_the_store_usable(store):
    kept, kept_rows = write_run(store, steps=2)
    run_id = store.create_run({})
    writer = store.writer(run_id, flush_every=10)
    with pytest.raises(sqlite3.ProgrammingError):  # the first step is committed at once
        writer.add(1, metrics=[(1, "loss", None, "", 1.0)], time_grads=[(1, 0, 1)])  # a value short
    with pytest.raises(sqlite3.ProgrammingError):
        writer.flush()
    assert store.load(run_id).metrics.empty and store.get_run(run_id).steps_done == 0
    assert_rundata_equal(store.load(kept), expected(kept_rows))
    assert store.create_run({}) == run_id + 1


def read_export(path: Path, like: pd.DataFrame) -> pd.DataFrame:
    """Re-read an exported table with plain pandas, cast to the dtypes load() gives."""
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        numeric = [c for c in like.columns if like[c].dtype != object]
        df = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in numeric})
    return df.astype(like.dtypes.to_dict())


@pytest.mark.parametrize("chunk", [3, EXPORT_CHUNK_ROWS], ids=["many-chunks", "one-chunk"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_rereads_equal_to_load(store, tmp_path, fmt, chunk, monkeypatch):
    """Streamed a few rows at a time (chunk boundaries inside steps included), the files hold exactly what load()
    gives, in its order and with its dtypes."""
    monkeypatch.setattr(store_module, "EXPORT_CHUNK_ROWS", chunk)
    run_id, written = write_run(store, steps=5)
    assert len(written["metrics"]) > 3 * chunk or chunk == EXPORT_CHUNK_ROWS
    paths = store.export(run_id, fmt, tmp_path / "out")
    names = [f"{t}.{fmt}" for t in TABLES] + ["run.json"]
    assert paths == [tmp_path / "out" / n for n in names]
    data = store.load(run_id)
    for table, path in zip(TABLES, paths):
        want = getattr(data, table)
        pd.testing.assert_frame_equal(read_export(path, want), want, check_exact=True)
    if fmt == "parquet":  # plain pandas reads the nullable integer columns back as such
        assert pd.read_parquet(paths[0])["layer"].dtype == "Int64"
    run = json.loads(paths[-1].read_text())
    assert run == {
        "id": run_id,
        "created": store.get_run(run_id).created,
        "config": {"seed": 0, "lr": 0.1},
        "status": "completed",
        "steps_done": 5,
        "summary": {"final_loss": 0.5},
        "pinned": False,
        "description": {},
    }


@pytest.mark.parametrize("fmt", ["xlsx", "CSV", ""], ids=["xlsx", "uppercase", "empty"])
def test_export_rejects_unknown_format_and_writes_nothing(store, tmp_path, fmt):
    run_id, _ = write_run(store, steps=2)
    with pytest.raises(StoreError, match=f"unknown export format '{fmt}'; use one of: csv, parquet"):
        store.export(run_id, fmt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(3).randbytes(4096))


def text_file(path: Path) -> None:
    path.write_text("step,loss\n1,0.5\n")


def sqlite_file(*statements: str):
    def make(path: Path) -> None:
        conn = sqlite3.connect(path)
        for sql in statements:
            conn.execute(sql)
        conn.commit()
        conn.close()

    return make


FOREIGN = [
    (random_bytes, "not an SQLite database"),
    (text_file, "not an SQLite database"),
    (sqlite_file("CREATE TABLE users (id INTEGER, name TEXT)", "INSERT INTO users VALUES (1, 'a')"), "no 'meta' table"),
    (sqlite_file("CREATE TABLE meta (a, b)"), "no such column"),
    (
        sqlite_file("CREATE TABLE meta (key TEXT, value TEXT)", "INSERT INTO meta VALUES ('app', 'other-tool')"),
        "meta app is 'other-tool'",
    ),
    (
        sqlite_file(
            "CREATE TABLE meta (key TEXT, value TEXT)",
            f"INSERT INTO meta VALUES ('app', 'gradient-flow-lab'), ('schema_version', '{SCHEMA_VERSION}')",
        ),
        "missing tables ['checkpoints', 'events', 'gates', 'metrics', 'runs', 'time_grads']",
    ),
]


@pytest.mark.parametrize(
    "make, reason", FOREIGN, ids=["random-bytes", "text", "unrelated-sqlite", "other-meta", "other-app", "no-tables"]
)
def test_foreign_file_is_refused_untouched(tmp_path, make, reason):
    path = tmp_path / "x.sqlite"
    make(path)
    before, listing = path.read_bytes(), sorted(os.listdir(tmp_path))
    with pytest.raises(StoreError) as err:
        Store(path)
    message = str(err.value)
    assert str(path) in message and reason in message and "pass another --db path" in message
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == listing


def test_other_schema_version_is_refused_untouched(tmp_path):
    path = tmp_path / "runs.sqlite"
    with Store(path) as s:
        write_run(s, steps=2)
    sql(path, "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    before = path.read_bytes()
    with pytest.raises(StoreError) as err:
        Store(path)
    assert str(err.value).startswith(f"{path} has store schema version {SCHEMA_VERSION + 1} but this code reads")
    assert path.read_bytes() == before


def test_new_path_gets_folder_schema_and_wal(tmp_path):
    path = tmp_path / "a" / "b" / "runs.sqlite"
    with Store(path) as s:
        assert s.path == path and s.list_runs() == []
    assert sql(path, "PRAGMA journal_mode") == [("wal",)]
    assert dict(sql(path, "SELECT key, value FROM meta")) == {"app": "gradient-flow-lab",
                                                              "schema_version": str(SCHEMA_VERSION)}
    indexes = {name for (name,) in sql(path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"metrics_chart_blocks128", "metrics_nonfinite", "runs_config"} <= indexes  # before any run grows long


def test_a_version_1_store_is_upgraded_with_its_runs_kept(tmp_path):
    path = tmp_path / "runs.sqlite"
    with Store(path) as s:
        run_id, _ = write_run(s, steps=3)
        before = s.load(run_id)
    # What a version-1 store was: the same tables without the chart indexes and the pinned column.
    sql(path, "DROP INDEX metrics_chart_blocks128")
    sql(path, "ALTER TABLE runs DROP COLUMN pinned")
    sql(path, "ALTER TABLE runs DROP COLUMN description")
    sql(path, "DROP INDEX metrics_nonfinite")
    sql(path, "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with Store(path) as s:
        after = s.load(run_id)
    assert dict(sql(path, "SELECT key, value FROM meta"))["schema_version"] == str(SCHEMA_VERSION)
    indexes = {name for (name,) in sql(path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"metrics_chart_blocks128", "metrics_nonfinite", "runs_config"} <= indexes
    pd.testing.assert_frame_equal(after.metrics, before.metrics)


def test_a_version_2_store_is_upgraded_and_finds_its_runs_by_config(tmp_path):
    path = tmp_path / "runs.sqlite"
    with Store(path) as s:
        run_id, _ = write_run(s, steps=3, seed=5)
    sql(path, "DROP INDEX runs_config")  # what a version-2 store was
    sql(path, "ALTER TABLE runs DROP COLUMN pinned")
    sql(path, "ALTER TABLE runs DROP COLUMN description")
    sql(path, "UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with Store(path) as s:
        assert s.find_finished({"seed": 5, "lr": 0.1}) == run_id
    assert dict(sql(path, "SELECT key, value FROM meta"))["schema_version"] == str(SCHEMA_VERSION)


def test_a_version_3_store_is_upgraded_once_with_its_runs_unpinned(tmp_path):
    path = tmp_path / "runs.sqlite"
    with Store(path) as s:
        run_id, _ = write_run(s, steps=3)
    sql(path, "ALTER TABLE runs DROP COLUMN pinned")  # what a version-3 store was
    sql(path, "ALTER TABLE runs DROP COLUMN description")
    sql(path, "UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    first, second = Store(path), Store(path)  # the second sees the new version already and changes nothing
    assert first.get_run(run_id).pinned is False
    second.pin(run_id)
    assert first.get_run(run_id).pinned is True
    assert dict(sql(path, "SELECT key, value FROM meta"))["schema_version"] == str(SCHEMA_VERSION)
    first.close(), second.close()


def test_a_version_4_store_gets_descriptions_and_its_runs_are_judged_by_their_config(tmp_path):
    """A run stored before descriptions were kept reads `{}`, and the verdicts derive its model from its config."""
    path = tmp_path / "runs.sqlite"
    config = RunConfig(cell="gru", num_layers=2, hidden_size=8, seq_len=6, steps=2)
    with Store(path) as s:
        run_id = s.create_run(config.to_dict())
    sql(path, "ALTER TABLE runs DROP COLUMN description")  # what a version-4 store was
    sql(path, "UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    with Store(path) as s:
        info = s.get_run(run_id)
        assert info.description == {} and info.config == config.to_dict()
        new_id = s.create_run(config.to_dict(), describe(config).to_dict())
        assert ModelDescription.from_dict(s.get_run(new_id).description) == describe(config)
    assert dict(sql(path, "SELECT key, value FROM meta"))["schema_version"] == str(SCHEMA_VERSION)
    model = stored_description(info.description, info.config)
    assert model == describe(config)
    assert (model.recurrent.cell, model.recurrent.num_layers, model.recurrent.weight_hh(1)) == \
        ("gru", 2, "rnn.weight_hh_l1")


def test_pruning_deletes_the_oldest_runs_that_are_not_pinned_training_or_kept(store):
    ids = [write_run(store, steps=60, seed=k)[0] for k in range(6)]
    training = store.create_run({"seed": 99})  # registered by this process: running
    store.pin(ids[0])
    full = store.used_bytes()
    file_size = store.path.stat().st_size
    one_run = full // 7
    pruned = store.prune(full - 2 * one_run, keep=frozenset({ids[1]}))
    assert len(pruned) >= 2 and pruned == ids[2:][:len(pruned)]  # oldest first, until under the quota
    assert store.used_bytes() <= full - 2 * one_run
    left = {r.id for r in store.list_runs()}
    assert {ids[0], ids[1], training} <= left and not left & set(pruned)
    assert store.path.stat().st_size <= file_size  # freed pages are reused, the file does not grow
    assert store.prune(store.used_bytes()) == []  # already within the quota


def test_pruning_that_cannot_reach_the_quota_deletes_nothing(store):
    ids = [write_run(store, steps=60, seed=k)[0] for k in range(3)]
    store.pin(ids[0])
    before = store.used_bytes()
    assert store.prune(0) is None  # even with every unpinned run gone the schema's pages remain
    assert [r.id for r in store.list_runs()] == ids[::-1] and store.used_bytes() == before
    store.pin(ids[0], False)
    reachable = store.prune(before - 1)
    assert reachable == [ids[0]]


def test_only_the_first_run_of_a_config_is_pinned_by_pin_if_first(store):
    first, second = write_run(store, steps=2, seed=1)[0], write_run(store, steps=2, seed=1)[0]
    other = write_run(store, steps=2, seed=2)[0]
    assert store.pin_if_first(first) and not store.pin_if_first(second) and store.pin_if_first(other)
    assert [r.pinned for r in store.list_runs()] == [True, False, True]
    store.pin(first, False)
    assert store.pin_if_first(second)


def test_used_bytes_count_rows_and_fall_when_a_run_is_deleted(store):
    empty = store.used_bytes()
    run_id, _ = write_run(store, steps=200)
    grown = store.used_bytes()
    assert grown > empty + 200 * 4 * 20  # at least 20 bytes a row for the metrics alone
    store.delete(run_id)
    assert store.used_bytes() < empty + (grown - empty) / 10


def test_find_finished_takes_the_newest_run_of_that_exact_config_that_ended_on_its_own(store):
    older, _ = write_run(store, steps=2, seed=1)
    newer, _ = write_run(store, steps=2, seed=1)
    other, _ = write_run(store, steps=2, seed=2)
    stopped = store.create_run({"seed": 3, "lr": 0.1})
    store.finish(stopped, "stopped", 0, {})
    store.create_run({"seed": 4, "lr": 0.1})  # still running
    assert store.find_finished({"seed": 1, "lr": 0.1}) == newer > older
    assert store.find_finished({"seed": 2, "lr": 0.1}) == other
    assert store.find_finished({"seed": 3, "lr": 0.1}) is None  # stopped: it did not end on its own
    assert store.find_finished({"seed": 4, "lr": 0.1}) is None
    assert store.find_finished({"seed": 1, "lr": 0.2}) is None


def test_page_redraw_threads_leave_no_connection_behind(tmp_path):
    # Streamlit draws each page in a new thread; each of them reads the store.
    with Store(tmp_path / "runs.sqlite") as s:
        run_id, _ = write_run(s, steps=2)
        for _ in range(20):
            reader = threading.Thread(target=s.load_for_charts, args=(run_id,))
            reader.start()
            reader.join()
        assert len(s._idle) == 1  # one connection, borrowed and returned by every thread in turn


def test_reopening_keeps_runs(tmp_path):
    path = tmp_path / "runs.sqlite"
    with Store(path) as s:
        run_id, written = write_run(s, steps=3)
    with Store(path) as s:
        assert s.get_run(run_id).status == "completed"
        assert_rundata_equal(s.load(run_id), expected(written))


def test_default_path_follows_env_else_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(DEFAULT_DB_ENV, str(tmp_path / "elsewhere.sqlite"))
    assert default_db_path() == tmp_path / "elsewhere.sqlite"
    monkeypatch.delenv(DEFAULT_DB_ENV)
    monkeypatch.chdir(tmp_path)
    assert default_db_path() == Path("runs/runs.sqlite")
    with Store() as s:
        assert s.path == tmp_path / "runs" / "runs.sqlite" and s.path.is_file()


@pytest.mark.parametrize("shared", [True, False], ids=["same-store-object", "second-store-object"])
def test_reader_thread_sees_committed_rows_while_writer_is_open(store, shared):
    run_id = store.create_run({})
    writer = store.writer(run_id, flush_every=100)
    reader = store if shared else Store(store.path)
    seen = {}

    def read(key):
        thread = threading.Thread(target=lambda: seen.update({key: reader.load(run_id).metrics["step"].tolist()}))
        thread.start()
        thread.join()

    for step in (1, 2, 3):
        writer.add(step, metrics=[(step, "loss", None, "", 1.0)])
    read("buffered")  # step 1 was committed at once, steps 2 and 3 wait in the buffer
    writer.flush()
    writer.add(4, metrics=[(4, "loss", None, "", 1.0)])
    read("flushed")
    other_connection = sql(store.path, "SELECT step FROM metrics WHERE run_id = ?", (run_id,))
    assert seen == {"buffered": [1], "flushed": [1, 2, 3]}
    assert other_connection == [(1,), (2,), (3,)]
    assert reader.get_run(run_id).steps_done == 3


def test_threads_write_separate_runs_concurrently(store):
    run_ids = [store.create_run({"worker": i}) for i in range(4)]

    def work(run_id):
        writer = store.writer(run_id, flush_every=2)
        for step in range(1, 31):
            writer.add(step, metrics=[(step, "loss", None, "", float(run_id * 1000 + step))])
        writer.close("completed", {})

    threads = [threading.Thread(target=work, args=(r,)) for r in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for run_id in run_ids:
        assert store.load(run_id).metrics["value"].tolist() == [float(run_id * 1000 + s) for s in range(1, 31)]
        assert store.get_run(run_id).status == "completed"


CHILD = """
import sys, time
from diagnostics.store import Store
store = Store(sys.argv[1])
run_id = store.create_run({"child": True})
writer = store.writer(run_id, flush_every=1000)
for step in range(1, 6):
    writer.add(step, metrics=[(step, "loss", None, "", float(step))])
writer.flush()
writer.add(6, metrics=[(6, "loss", None, "", 6.0)])
print(run_id, "ready", flush=True)
time.sleep(60)
"""


def test_killed_writer_reads_back_interrupted_with_flushed_steps(tmp_path):
    path = tmp_path / "runs.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline().split()
        assert line[1:] == ["ready"], child.stderr.read() if child.poll() is not None else line
        run_id = int(line[0])
        with Store(path) as s:
            assert s.get_run(run_id).status == "running"
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            info = s.get_run(run_id)
            assert (info.status, info.steps_done, info.config) == ("interrupted", 5, {"child": True})
            assert s.load(run_id).metrics["value"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
            assert [r.status for r in s.list_runs()] == ["interrupted"]
        stored = sql(path, "SELECT status FROM runs")
        assert stored == [("running",)]  # the reported status is derived; reading wrote nothing
    finally:
        child.kill()
        child.wait()


def test_opening_a_writer_makes_this_process_the_runs_owner(store):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run_id = store.create_run({})
    sql(store.path, "UPDATE runs SET pid = ? WHERE id = ?", (gone.pid, run_id))
    assert store.get_run(run_id).status == "interrupted"
    store.writer(run_id)
    assert store.get_run(run_id).status == "running"
    assert sql(store.path, "SELECT pid FROM runs WHERE id = ?", (run_id,)) == [(os.getpid(),)]


@pytest.mark.parametrize(
    "age, status",
    [(0, "running"), (STALE_SECONDS - 10, "running"), (STALE_SECONDS + 10, "interrupted")],
    ids=["fresh", "nearly-stale", "stale"],
)
def test_run_on_another_host_is_interrupted_once_heartbeat_is_stale(store, age, status):
    run_id = store.create_run({})
    sql(store.path, "UPDATE runs SET host = 'elsewhere', heartbeat = ? WHERE id = ?", (time.time() - age, run_id))
    assert store.get_run(run_id).status == status


@pytest.mark.parametrize(
    "obj, text",
    [
        (
            {"a": NAN, "b": [INF, -INF, 1.5], "c": {"d": (NAN, 2)}},
            '{"a": null, "b": [null, null, 1.5], "c": {"d": [null, 2]}}',
        ),
        ([1, "x", None, True], '[1, "x", null, true]'),
        (-INF, "null"),
    ],
    ids=["nested", "finite-untouched", "bare-inf"],
)
def test_strict_json_turns_nonfinite_into_null(obj, text):
    assert strict_json(obj) == text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))


def test_checkpoint_round_trip_keeps_the_latest(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    run = store.create_run({"cell": "rnn"})
    assert store.load_checkpoint(run) is None
    store.save_checkpoint(run, 5, b"\x00early")
    store.save_checkpoint(run, 9, b"\x00late\xff")
    assert store.load_checkpoint(run) == (9, b"\x00late\xff")
    store.finish(run, "completed", 9, {})
    store.delete(run)
    with pytest.raises(StoreError, match=f"no run {run}"):
        store.load_checkpoint(run)


def test_a_run_still_training_is_not_deleted(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    run_id, written = write_run(store, steps=3)
    live = store.create_run({"cell": "lstm"})  # this process is alive, so the run is "running"
    with pytest.raises(StoreError, match=f"run {live} is still training; stop it first"):
        store.delete(live)
    assert store.get_run(live).status == "running"
    store.finish(live, "stopped", 0, {})
    store.delete(live)
    assert [r.id for r in store.list_runs()] == [run_id]


def test_zip_export_holds_every_table_and_the_run(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    run_id, written = write_run(store, steps=4)
    archive = zipfile.ZipFile(io.BytesIO(store.export_zip(run_id)))
    names = sorted(archive.namelist())
    assert names == sorted(f"run-{run_id}/{n}" for n in
                           ("metrics.csv", "time_grads.csv", "gates.csv", "events.csv", "run.json"))
    metrics = pd.read_csv(archive.open(f"run-{run_id}/metrics.csv"))
    assert len(metrics) == len(store.load(run_id).metrics) and set(metrics["step"]) == {1, 2, 3, 4}
    assert json.loads(archive.read(f"run-{run_id}/run.json"))["id"] == run_id


def test_listing_with_summary_keys_reads_only_those_and_a_limit_takes_the_newest(store):
    ids = [write_run(store, steps=2, seed=k)[0] for k in range(4)]
    store.finish(ids[-1], "completed", 2, {"final_loss": 0.25, "diagnoses": [{"big": "x" * 1000}]})
    [newest, second] = store.list_runs(summary_keys=("final_loss", "final_metric"), limit=2)
    assert (newest.id, second.id) == (ids[-1], ids[-2])
    assert newest.summary == {"final_loss": 0.25, "final_metric": None}
    assert newest.config == {"seed": 3, "lr": 0.1} and newest.status == "completed"
    assert store.count_runs() == 4 and len(store.list_runs()) == 4
    with pytest.raises(StoreError, match="summary keys must be plain names"):
        store.list_runs(summary_keys=("x') --",))
