"""The run store: every run's config, status and tidy tables in one SQLite file, readable while a run writes.

One file holds many runs so the CLI, the dashboard and a live training process share them without a server.
The file is in WAL mode: readers in other threads or processes see each committed batch while the writer
appends, and a crash loses at most the rows not yet flushed.

Decisions callers rely on
- Rows go in as tuples of plain Python scalars (int, float, str, None) in `rundata` column order without
  ``run_id``; SQLite cannot bind numpy integers.
- SQLite stores NaN as NULL, so NULL in a value column reads back as NaN; +-Inf round-trips unchanged.
- "interrupted" is never stored: a run still marked "running" whose writer process is gone is *reported* as
  interrupted by `get_run` / `list_runs`, so reading never writes.
- Run ids are never reused (AUTOINCREMENT), so "run 7" keeps meaning one run after deletions.
- An existing file that is not a store of this schema version raises `StoreError` and is left untouched.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .rundata import EVENT_COLUMNS, GATE_COLUMNS, METRIC_COLUMNS, TIME_GRAD_COLUMNS, RunData, frame

DEFAULT_DB_ENV = "GFL_DB"
SCHEMA_VERSION = 1
APP = "gradient-flow-lab"
STALE_SECONDS = 120  # a heartbeat this old means the writer on another host is gone
FLUSH_SECONDS = 10.0  # a writer also flushes this long after its last flush, so slow runs stay live
BUSY_SECONDS = 30.0  # how long a connection waits for another process's write transaction
FINAL_STATUSES = ("completed", "diverged", "stopped")
EXPORT_FORMATS = ("csv", "parquet")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = {"metrics": METRIC_COLUMNS, "time_grads": TIME_GRAD_COLUMNS, "gates": GATE_COLUMNS, "events": EVENT_COLUMNS}
_RUN_COLUMNS = "id, created, config, status, steps_done, summary, pid, host, heartbeat"
_RUN_REF = "run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE"

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('app', '{APP}'), ('schema_version', '{SCHEMA_VERSION}');
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    steps_done INTEGER NOT NULL,
    summary TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    {_RUN_REF}, step INTEGER NOT NULL, name TEXT NOT NULL, layer INTEGER, tensor TEXT NOT NULL, value REAL
);
CREATE TABLE IF NOT EXISTS time_grads (
    {_RUN_REF}, step INTEGER NOT NULL, layer INTEGER, t INTEGER NOT NULL, value REAL
);
CREATE TABLE IF NOT EXISTS gates (
    {_RUN_REF}, step INTEGER NOT NULL, layer INTEGER, gate TEXT NOT NULL, t INTEGER NOT NULL,
    mean REAL, frac_low REAL, frac_high REAL
);
CREATE TABLE IF NOT EXISTS events (
    {_RUN_REF}, step INTEGER NOT NULL, kind TEXT NOT NULL, tensor TEXT NOT NULL, layer INTEGER, time_step INTEGER,
    nan INTEGER NOT NULL, posinf INTEGER NOT NULL, neginf INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    {_RUN_REF}, step INTEGER NOT NULL, weights BLOB NOT NULL, PRIMARY KEY (run_id, step)
);
CREATE INDEX IF NOT EXISTS metrics_run_step ON metrics (run_id, step);
CREATE INDEX IF NOT EXISTS metrics_run_name_step ON metrics (run_id, name, step);
CREATE INDEX IF NOT EXISTS time_grads_run_step ON time_grads (run_id, step);
CREATE INDEX IF NOT EXISTS gates_run_step ON gates (run_id, step);
CREATE INDEX IF NOT EXISTS events_run_step ON events (run_id, step);
COMMIT;
"""


class StoreError(Exception):
    """A store problem the user can fix (wrong file, unknown run, bad argument); the message says how."""


@dataclass(frozen=True)
class RunInfo:
    """One run's bookkeeping as callers see it (status already "interrupted" if its writer is gone)."""

    id: int
    created: str
    config: dict
    status: str
    steps_done: int
    summary: dict


def default_db_path() -> Path:
    """Where runs go unless told otherwise, so the CLI and the dashboard agree without flags."""
    return Path(os.environ.get(DEFAULT_DB_ENV) or "runs/runs.sqlite")


def _finite(obj):
    """The same structure with non-finite floats as None, which JSON can represent."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def strict_json(obj) -> str:
    """JSON that every parser accepts: NaN and +-Inf (which json.dumps writes as bare words) become null."""
    return json.dumps(_finite(obj), allow_nan=False)


def _writer_alive(pid: int, host: str, heartbeat: float) -> bool:
    """Whether the process that marked a run "running" may still be writing to it."""
    if host != socket.gethostname():
        return time.time() - heartbeat < STALE_SECONDS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _run_info(row: tuple) -> RunInfo:
    """A runs row as callers see it: JSON parsed, a dead writer's "running" derived as "interrupted"."""
    run_id, created, config, status, steps_done, summary, pid, host, heartbeat = row
    if status == "running" and not _writer_alive(pid, host, heartbeat):
        status = "interrupted"
    return RunInfo(run_id, created, json.loads(config), status, steps_done, json.loads(summary))


def _validate(path: Path) -> None:
    """Refuse, without writing a byte, any existing file that is not a store this code can read."""
    hint = "pass another --db path"
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror}; {hint}") from e
    if head != _SQLITE_MAGIC:
        raise StoreError(f"{path} is not a Gradient Flow Lab store (not an SQLite database); {hint}")
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_SECONDS)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            raise StoreError(f"{path} is not a Gradient Flow Lab store (no 'meta' table); {hint}")
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a Gradient Flow Lab store ({e}); {hint}") from e
    finally:
        conn.close()
    if meta.get("app") != APP:
        raise StoreError(f"{path} is not a Gradient Flow Lab store (meta app is {meta.get('app')!r}); {hint}")
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        raise StoreError(
            f"{path} has store schema version {meta.get('schema_version')} but this code reads version "
            f"{SCHEMA_VERSION}; use the matching Gradient Flow Lab version or {hint}"
        )
    missing = sorted({"runs", "checkpoints", *_TABLES} - tables)
    if missing:
        raise StoreError(f"{path} is a damaged Gradient Flow Lab store (missing tables {missing}); {hint}")


class Store:
    """All runs in one SQLite file; one connection per thread, so threads and processes can share it."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(default_db_path() if path is None else path).expanduser().absolute()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if self.path.exists() and self.path.stat().st_size > 0:
            _validate(self.path)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)  # IF NOT EXISTS: another process may be creating it too
        except sqlite3.Error as e:
            raise StoreError(f"cannot create a store at {self.path}: {e}") from e

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections must not be shared across threads mid-transaction)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        """All-or-nothing writes (BEGIN IMMEDIATE) or one consistent snapshot for reads (BEGIN)."""
        conn = self._conn()
        conn.execute(begin)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _row(self, conn: sqlite3.Connection, run_id: int) -> tuple:
        row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in {self.path}; `python -m diagnostics runs` lists them")
        return row

    def create_run(self, config: dict) -> int:
        """Register a run as "running" by this process, before its first step is written."""
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._transaction("BEGIN IMMEDIATE") as conn:
            cur = conn.execute(
                "INSERT INTO runs (created, config, status, steps_done, summary, pid, host, heartbeat)"
                " VALUES (?, ?, 'running', 0, '{}', ?, ?, ?)",
                (created, strict_json(config), os.getpid(), socket.gethostname(), time.time()),
            )
        return cur.lastrowid

    def writer(self, run_id: int, flush_every: int = 50) -> RunWriter:
        """A buffered writer for one run; its process becomes the run's owner for the "interrupted" check."""
        if flush_every < 1:
            raise StoreError(f"flush_every must be at least 1, got {flush_every}")
        with self._transaction("BEGIN IMMEDIATE") as conn:
            steps_done = _run_info(self._row(conn, run_id)).steps_done
            conn.execute(
                "UPDATE runs SET pid = ?, host = ?, heartbeat = ? WHERE id = ?",
                (os.getpid(), socket.gethostname(), time.time(), run_id),
            )
        return RunWriter(self, run_id, flush_every, steps_done)

    def _append(self, run_id: int, rows: dict[str, list[tuple]], steps_done: int) -> None:
        with self._transaction("BEGIN IMMEDIATE") as conn:
            for table, columns in _TABLES.items():
                if rows[table]:
                    marks = ", ".join("?" * (len(columns) + 1))
                    sql = f"INSERT INTO {table} (run_id, {', '.join(columns)}) VALUES ({marks})"
                    conn.executemany(sql, rows[table])
            conn.execute(
                "UPDATE runs SET steps_done = ?, heartbeat = ? WHERE id = ?", (steps_done, time.time(), run_id)
            )

    def finish(self, run_id: int, status: str, steps_done: int, summary: dict) -> None:
        """Record how a run ended, so it is no longer taken for running or interrupted."""
        if status not in FINAL_STATUSES:
            raise StoreError(f"cannot finish run {run_id} as {status!r}; use one of: {', '.join(FINAL_STATUSES)}")
        with self._transaction("BEGIN IMMEDIATE") as conn:
            self._row(conn, run_id)
            conn.execute(
                "UPDATE runs SET status = ?, steps_done = ?, summary = ?, heartbeat = ? WHERE id = ?",
                (status, steps_done, strict_json(summary), time.time(), run_id),
            )

    def get_run(self, run_id: int) -> RunInfo:
        """One run's bookkeeping, with a dead writer's run reported as "interrupted"."""
        with self._transaction("BEGIN") as conn:
            return _run_info(self._row(conn, run_id))

    def list_runs(self) -> list[RunInfo]:
        """Every run, newest first, as the CLI and the run picker show them."""
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC").fetchall()
        return [_run_info(row) for row in rows]

    def load(self, run_id: int, since_step: int = 0) -> RunData:
        """A run's tables from one consistent snapshot; `since_step` lets a live view fetch only new steps."""
        tables = {}
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            for table, columns in _TABLES.items():
                sql = f"SELECT {', '.join(columns)} FROM {table} WHERE run_id = ? AND step > ? ORDER BY step, rowid"
                tables[table] = frame(conn.execute(sql, (run_id, since_step)).fetchall(), columns)
        return RunData(**tables)

    def save_checkpoint(self, run_id: int, step: int, weights: bytes) -> None:
        """Keep a run's weights (serialised state dict) so pages can look inside the trained model later."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            self._row(conn, run_id)
            conn.execute("INSERT OR REPLACE INTO checkpoints (run_id, step, weights) VALUES (?, ?, ?)",
                         (run_id, step, sqlite3.Binary(weights)))

    def load_checkpoint(self, run_id: int) -> tuple[int, bytes] | None:
        """(step, weights) of the run's latest checkpoint, or None when it has none."""
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            row = conn.execute("SELECT step, weights FROM checkpoints WHERE run_id = ? ORDER BY step DESC LIMIT 1",
                               (run_id,)).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def delete(self, run_id: int) -> None:
        """Remove one run and its rows (cascading), leaving every other run as it was."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            self._row(conn, run_id)
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def export(self, run_id: int, fmt: str, out: str | os.PathLike) -> list[Path]:
        """Write a run as one file per table plus run.json into directory `out`, for tools outside this project."""
        if fmt not in EXPORT_FORMATS:
            raise StoreError(f"unknown export format {fmt!r}; use one of: {', '.join(EXPORT_FORMATS)}")
        info, data = self.get_run(run_id), self.load(run_id)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for table in _TABLES:
            path = out / f"{table}.{fmt}"
            df = getattr(data, table)
            if fmt == "csv":
                df.to_csv(path, index=False)
            else:
                df.to_parquet(path, index=False)
            paths.append(path)
        run_json = out / "run.json"
        run_json.write_text(strict_json(dataclasses.asdict(info)) + "\n")
        return [*paths, run_json]

    def close(self) -> None:
        """Close every thread's connection, which also checkpoints the WAL when this is the last one."""
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()


class RunWriter:
    """Buffers one run's rows and commits them in one transaction per batch, the only way training writes."""

    def __init__(self, store: Store, run_id: int, flush_every: int, steps_done: int):
        self.run_id = run_id
        self.steps_done = steps_done  # last step committed to the store
        self._store = store
        self._flush_every = flush_every
        self._rows: dict[str, list[tuple]] = {table: [] for table in _TABLES}
        self._pending = 0
        self._step = steps_done
        self._flushed_at = time.monotonic()
        self._closed = False

    def add(self, step: int, metrics=(), time_grads=(), gates=(), events=()) -> None:
        """Buffer one step's rows; commits when `flush_every` steps or FLUSH_SECONDS have accumulated."""
        if self._closed:
            raise StoreError(f"the writer of run {self.run_id} is closed")
        for table, rows in zip(_TABLES, (metrics, time_grads, gates, events)):
            self._rows[table].extend((self.run_id, *row) for row in rows)
        self._pending += 1
        self._step = step
        if self._pending >= self._flush_every or time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered rows, steps_done and a fresh heartbeat together; on error the buffer is kept."""
        self._store._append(self.run_id, self._rows, self._step)
        self._rows = {table: [] for table in _TABLES}
        self._pending = 0
        self.steps_done = self._step
        self._flushed_at = time.monotonic()

    def close(self, status: str, summary: dict) -> None:
        """Flush and record the run's end in one call, as the trainer does when it stops."""
        self.flush()
        self._store.finish(self.run_id, status, self.steps_done, summary)
        self._closed = True
