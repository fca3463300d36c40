"""The store under faults and hostile paths: no committed row is lost, no file it refused is touched, and every
failure is one StoreError line (never a traceback). Real files, real processes, real mounts (tmpfs)."""

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from diagnostics.store import Store, StoreError

from tests.filesystems import mounted_tmpfs, remount_read_only

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def loss_rows(step: int) -> dict:
    return {"metrics": [(step, "loss", None, "", float(step))]}


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --- two Stores on one file in one process, another process closing: every commit survives a kill ----------

WRITER_WITH_SECOND_STORE = """
import sys
from diagnostics.store import Store
path = sys.argv[1]
first = Store(path)
run_id = first.create_run({"child": True})
writer = first.writer(run_id, flush_every=1)
print(run_id, flush=True)
for step in range(1, 61):
    writer.add(step, metrics=[(step, "loss", None, "", float(step))])  # committed at once (flush_every=1)
    Store(path).close()  # a second Store in this process, as the dashboard's pages and the tests open them
    print(step, flush=True)
    sys.stdin.readline()  # the other process has opened and closed its own connection meanwhile
"""


def test_a_second_store_in_the_writers_process_loses_no_commit_when_another_process_closes(tmp_path):
    path = tmp_path / "runs.sqlite"
    Store(path).close()
    child = subprocess.Popen([sys.executable, "-c", WRITER_WITH_SECOND_STORE, str(path)], cwd=ROOT, env=ENV,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = int(child.stdout.readline())
        committed = 0
        for _ in range(60):
            committed = int(child.stdout.readline())
            # Another process's last connection closes: it checkpoints and would delete the WAL if the writer's
            # process no longer held its lock on the file.
            with closing(sqlite3.connect(path)) as conn:
                conn.execute("SELECT COUNT(*) FROM metrics").fetchone()
            child.stdin.write("\n")
            child.stdin.flush()
        assert committed == 60
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        child.kill()
        child.wait()
    with Store(path) as store:
        assert store.load(run_id).metrics["value"].tolist() == [float(s) for s in range(1, 61)]
        assert store.get_run(run_id).status == "interrupted"


# --- paths that are not a store's file ------------------------------------------------------------------------

def test_dev_null_is_refused_and_nothing_is_made_beside_it():
    for create in (True, False):
        with pytest.raises(StoreError, match="/dev/null is not a regular file, so it cannot hold a store"):
            Store("/dev/null", create=create)
    assert not [name for name in os.listdir("/dev") if name.startswith("null-")]


def test_a_folder_and_a_pipe_are_refused_untouched(tmp_path):
    folder, pipe = tmp_path / "folder", tmp_path / "pipe"
    folder.mkdir()
    os.mkfifo(pipe)  # opening it for reading would block: it must be refused before anything opens it
    for path in (folder, pipe):
        with pytest.raises(StoreError, match="is not a regular file"):
            Store(path)
    assert listing(tmp_path) == ["folder", "pipe"] and listing(folder) == []


def foreign_wal_file(path: Path, statements: list[str]) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in statements:
            conn.execute(statement)
        conn.commit()


@pytest.mark.parametrize("statements, reason", [
    (["CREATE TABLE users (id INTEGER, name TEXT)"], "no 'meta' table"),
    (["CREATE TABLE meta (key TEXT, value TEXT)", "INSERT INTO meta VALUES ('app', 'other')"], "meta app is 'other'"),
], ids=["unrelated", "other-app"])
def test_a_foreign_wal_mode_database_gets_no_wal_or_shm_beside_it(tmp_path, statements, reason):
    path = tmp_path / "theirs.sqlite"
    foreign_wal_file(path, statements)
    before = path.read_bytes()
    assert listing(tmp_path) == ["theirs.sqlite"]  # their last connection closed: no -wal left
    for create in (True, False):
        with pytest.raises(StoreError, match=reason):
            Store(path, create=create)
    assert listing(tmp_path) == ["theirs.sqlite"] and path.read_bytes() == before


def test_a_store_whose_schema_is_still_in_its_wal_opens_beside_its_creator(tmp_path):
    path = tmp_path / "runs.sqlite"
    with Store(path) as creator:
        run_id = creator.create_run({"a": 1})  # the creator's connection stays open: nothing checkpointed yet
        assert (tmp_path / "runs.sqlite-wal").stat().st_size > 0
        with Store(path, create=False) as reader:
            assert [run.id for run in reader.list_runs()] == [run_id]


# --- create=False: read-only commands make nothing --------------------------------------------------------------

def test_without_create_a_missing_store_is_refused_and_no_folder_is_made(tmp_path):
    path = tmp_path / "sub" / "runs.sqlite"
    with pytest.raises(StoreError) as err:
        Store(path, create=False)
    assert str(err.value) == (f"no run store at {path}; `python -m diagnostics train` makes one there "
                              "(or pass --db with the path of an existing store)")
    assert listing(tmp_path) == []


def test_without_create_an_empty_file_stays_an_empty_file(tmp_path):
    path = tmp_path / "runs.sqlite"
    path.touch()
    with pytest.raises(StoreError, match="no run store at"):
        Store(path, create=False)
    assert listing(tmp_path) == ["runs.sqlite"] and path.stat().st_size == 0
    with Store(path) as store:  # a command that writes runs makes it a store
        assert store.list_runs() == []


# --- places a store cannot be made ------------------------------------------------------------------------------

def test_a_store_under_a_regular_file_is_one_line_of_error(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    path = tmp_path / "notes.txt" / "x" / "runs.sqlite"
    with pytest.raises(StoreError) as err:
        Store(path)
    assert str(err.value) == (f"cannot create a store at {path}: cannot make its folder (Not a directory); "
                              "pass another --db path")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_read_only_filesystem_is_one_line_of_error(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "1m") as where:
        remount_read_only(where)
        for path in (where / "runs.sqlite", where / "new" / "runs.sqlite"):
            with pytest.raises(StoreError, match="Read-only file system|readonly|unable to open") as err:
                Store(path)
            assert str(path) in str(err.value) and "\n" not in str(err.value)
        assert listing(where) == []


# --- a full disk while training: the committed rows stay ------------------------------------------------------

def test_a_full_disk_is_a_store_error_and_every_committed_step_stays(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "400k") as where:
        path = where / "runs.sqlite"
        store = Store(path)
        run_id = store.create_run({"a": 1})
        writer = store.writer(run_id, flush_every=1)
        big = "x" * 2000  # one step of rows of about 2 kB, so the disk fills in a few hundred steps
        with pytest.raises(StoreError) as err:
            for step in range(1, 100_000):
                writer.add(step, metrics=[(step, "loss", None, big, float(step))])
        assert "database or disk is full" in str(err.value) and "free some space" in str(err.value)
        kept = writer.steps_done
        assert kept > 10
        store.close()
        with Store(path, create=False) as reopened:
            assert reopened.load(run_id).metrics["step"].tolist() == list(range(1, kept + 1))
            assert reopened.get_run(run_id).steps_done == kept


# --- run ids no SQLite integer can hold ------------------------------------------------------------------------

@pytest.mark.parametrize("run_id", [2**63, 10**30, 0, -1], ids=["2^63", "10^30", "zero", "negative"])
@pytest.mark.parametrize("call", [
    lambda s, r: s.get_run(r), lambda s, r: s.load(r), lambda s, r: s.load_for_charts(r), lambda s, r: s.delete(r),
    lambda s, r: s.writer(r), lambda s, r: s.finish(r, "completed", 1, {}), lambda s, r: s.load_checkpoint(r),
    lambda s, r: s.save_checkpoint(r, 1, b"w"), lambda s, r: s.export(r, "csv", s.path.parent / "out"),
    lambda s, r: s.load_checkpoint(r, 0), lambda s, r: s.checkpoint_steps(r),
], ids=["get_run", "load", "load_for_charts", "delete", "writer", "finish", "load_checkpoint", "save_checkpoint",
        "export", "load_checkpoint_at", "checkpoint_steps"])
def test_a_run_id_outside_int64_is_no_run(tmp_path, call, run_id):
    with Store(tmp_path / "runs.sqlite") as store:
        with pytest.raises(StoreError) as err:
            call(store, run_id)
    assert str(err.value).startswith(f"no run {run_id} in {tmp_path / 'runs.sqlite'}: run ids are whole numbers")
    assert listing(tmp_path) == ["runs.sqlite"]  # export made no folder


# --- export where it cannot write: nothing is written ---------------------------------------------------------

@pytest.fixture
def finished_run(tmp_path):
    store = Store(tmp_path / "db" / "runs.sqlite")
    run_id = store.create_run({"a": 1})
    writer = store.writer(run_id)
    for step in range(1, 4):
        writer.add(step, **loss_rows(step))
    writer.close("completed", {})
    yield store, run_id
    store.close()


def test_export_onto_an_existing_file_leaves_it_as_it_was(tmp_path, finished_run):
    store, run_id = finished_run
    target = tmp_path / "report.csv"
    target.write_text("keep me")
    with pytest.raises(StoreError, match="it exists and is not a folder; pass a folder path to --out"):
        store.export(run_id, "csv", target)
    assert target.read_text() == "keep me"


def test_export_under_a_file_or_onto_dev_null_writes_nothing(tmp_path, finished_run):
    store, run_id = finished_run
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match=r"cannot make the folder \(Not a directory\)"):
        store.export(run_id, "csv", tmp_path / "file" / "sub")
    with pytest.raises(StoreError, match="/dev/null: it exists and is not a folder"):
        store.export(run_id, "csv", "/dev/null")
    assert (tmp_path / "file").read_text() == "x" and listing(tmp_path) == ["db", "file"]


def test_export_to_a_read_only_or_full_filesystem_leaves_no_partial_files(tmp_path, finished_run):
    store, run_id = finished_run
    with mounted_tmpfs(tmp_path / "ro", "1m") as where:
        remount_read_only(where)
        with pytest.raises(StoreError, match="Read-only file system"):
            store.export(run_id, "csv", where / "out")
    with mounted_tmpfs(tmp_path / "full", "64k") as where:
        (where / "filler").write_bytes(b"\0" * 60_000)  # fills the 64 kB disk to its last few blocks
        with pytest.raises(StoreError, match="No space left on device; nothing was written"):
            store.export(run_id, "csv", where / "out")
        assert listing(where) == ["filler"]
