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
import io
import json
import math
import os
import shutil
import socket
import sqlite3
import stat
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .config import quoted
from .runid import MAX_RUN_ID
from .rundata import DTYPES, EVENT_COLUMNS, GATE_COLUMNS, METRIC_COLUMNS, TIME_GRAD_COLUMNS, RunData, frame
from .rundata import (GRAD_NORM, GRAD_NORM_POST_CLIP, GRAD_NORM_PRE_CLIP, HELDOUT_METRIC, HIDDEN_SATURATION, LOSS,
                      METRIC, SIGMA_MAX, UPDATE_RATIO, WEIGHT_MAX_ABS, WEIGHT_NORM)

DEFAULT_DB_ENV = "GFL_DB"
# 2: the chart-read indexes; 3: runs found by their config; 4: pinned runs; 5: each run's model description
# (older stores are upgraded when opened)
SCHEMA_VERSION = 5
UPGRADABLE_FROM = (1, 2, 3, 4)
MAX_IDLE_CONNECTIONS = 4  # kept open between uses; Streamlit runs each page redraw in a new thread
APP = "gradient-flow-lab"
STALE_SECONDS = 120  # a heartbeat this old means the writer on another host is gone
FLUSH_SECONDS = 0.5  # a writer also flushes this long after its last flush, so a live view lags at most ~0.5 s
BUSY_SECONDS = 30.0  # how long a connection waits for another process's write transaction
FINAL_STATUSES = ("completed", "diverged", "stopped")
EXPORT_FORMATS = ("csv", "parquet")

_TABLES = {"metrics": METRIC_COLUMNS, "time_grads": TIME_GRAD_COLUMNS, "gates": GATE_COLUMNS, "events": EVENT_COLUMNS}
_RUN_COLUMNS = "id, created, config, status, steps_done, summary, pid, host, heartbeat, pinned, description"
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
    heartbeat REAL NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT '{{}}'
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


class _NoRoom(Exception):
    """Inside `prune`: the quota cannot be reached, so its deletes are rolled back."""


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
    pinned: bool = False  # kept when the store's quota prunes old runs (lesson runs, or pinned by the operator)
    description: dict = dataclasses.field(default_factory=dict)  # description.ModelDescription; {}: stored before 5

    @property
    def watched(self) -> bool:
        """Recorded by `watch` in a user's own loop: it has a model description and no `RunConfig`."""
        return self.description.get("source") == "watch"


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
    run_id, created, config, status, steps_done, summary, pid, host, heartbeat, pinned, description = row
    if status == "running" and not _writer_alive(pid, host, heartbeat):
        status = "interrupted"
    return RunInfo(run_id, created, json.loads(config), status, steps_done, json.loads(summary), bool(pinned),
                   json.loads(description))


def _read_meta(path: Path, mode: str) -> tuple[set[str], dict]:
    """Table names and meta rows of the database at `path`, read by SQLite alone (never Python's open(): closing
    any descriptor of a file drops every POSIX lock this process holds on it, including SQLite's own, which let
    another process delete the WAL under a live writer). `immutable=1` takes no locks and creates no -wal, -shm
    or -journal beside a file that may not be ours; it cannot see a WAL not yet checkpointed, which `mode=ro` can."""
    conn = sqlite3.connect(f"{path.as_uri()}?{mode}", uri=True, timeout=BUSY_SECONDS)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
    finally:
        conn.close()
    return tables, meta


def _validate(path: Path) -> int:
    """Refuse, without writing a byte or creating a file beside it, any existing file that is not a store this
    code can read; return its schema version (SCHEMA_VERSION, or one of UPGRADABLE_FROM)."""
    hint = "pass another --db path"
    try:
        try:
            tables, meta, unreadable = *_read_meta(path, "immutable=1"), None
        except sqlite3.DatabaseError as e:
            tables, meta, unreadable = set(), {}, e
        if "meta" not in tables and Path(f"{path}-wal").exists():  # a store whose schema is still in its WAL
            tables, meta = _read_meta(path, "mode=ro")
        elif unreadable is not None:
            raise unreadable
    except sqlite3.DatabaseError as e:
        reason = "not an SQLite database" if str(e) == "file is not a database" else str(e)
        raise StoreError(f"{path} is not a Gradient Flow Lab store ({reason}); {hint}") from e
    if "meta" not in tables:
        raise StoreError(f"{path} is not a Gradient Flow Lab store (no 'meta' table); {hint}")
    if meta.get("app") != APP:
        raise StoreError(f"{path} is not a Gradient Flow Lab store (meta app is {quoted(meta.get('app'))}); {hint}")
    readable = {str(v) for v in (SCHEMA_VERSION, *UPGRADABLE_FROM)}
    if meta.get("schema_version") not in readable:
        raise StoreError(
            f"{path} has store schema version {str(meta.get('schema_version'))[:40]} but this code reads version "
            f"{SCHEMA_VERSION}; use the matching Gradient Flow Lab version or {hint}"
        )
    missing = sorted({"runs", "checkpoints", *_TABLES} - tables)
    if missing:
        raise StoreError(f"{path} is a damaged Gradient Flow Lab store (missing tables {missing}); {hint}")
    return int(meta["schema_version"])


def _existing_size(path: Path) -> int | None:
    """Size of the regular file at `path`, None if nothing is there; anything else (a device such as /dev/null,
    a folder, a pipe) is refused before SQLite can create a -journal beside it."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):  # the latter: a parent is a file, which mkdir reports
        return None
    except OSError as e:
        raise StoreError(f"cannot use {path} as a store: {e.strerror}; pass another --db path") from e
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"{path} is not a regular file, so it cannot hold a store; pass another --db path")
    return info.st_size


def _store_error(failure: str, e: sqlite3.Error) -> StoreError:
    """One line that says what failed and, for the errors a user can fix, how."""
    text = str(e)
    if "full" in text:
        text += "; free some space (deleting old runs helps: `python -m diagnostics delete RUN_ID`)"
    elif "readonly" in text or "read-only" in text:
        text += "; the store's file or folder is not writable by this user"
    return StoreError(f"{failure}: {text}")


# --- chart reads ----------------------------------------------------------------------------------------
# The rows the lab's charts draw: these metrics for aggregates (tensor "") and the readout weight, and
# sigma_max of each recurrent matrix. Other per-tensor rows stay out: the lab draws layers, not tensors.
CHART_METRICS = (LOSS, METRIC, GRAD_NORM_PRE_CLIP, GRAD_NORM_POST_CLIP, GRAD_NORM, WEIGHT_NORM, WEIGHT_MAX_ABS,
                 UPDATE_RATIO, HIDDEN_SATURATION, SIGMA_MAX)
CHART_TENSORS = ("", "readout.weight")
# Runs up to CHART_WHOLE_STEPS steps are read whole (under a second). Longer runs are read per CHART_BLOCK-step
# block, four index seeks per block and series instead of a scan: a 100 000-step run then costs about twice
# what a 1 000-step one does, where reading it whole takes ~15 s. The block index orders each block's rows by
# value, so its first and last entries are the block's min and max.
CHART_WHOLE_STEPS = 16_000
CHART_BLOCK = 128
CHART_RECORDED_STEPS = 150  # recorded steps (time_grads, gates) a chart gets at most
CHART_TIME_BUCKETS = 150  # time steps t a chart gets at most; longer sequences are bucketed
_DBL_MAX = "1.7976931348623157e308"  # the largest double: abs(value) above it is +-Inf
_NONFINITE = f"(value IS NULL OR abs(value) > {_DBL_MAX})"
_CHART_ROWS = "(name IN ({}) AND (tensor IN ({}) OR name = '{}'))".format(
    *(", ".join(f"'{x}'" for x in group) for group in (CHART_METRICS, CHART_TENSORS)), SIGMA_MAX)
# Part of the schema, so they exist before any run grows long and reads never write; SQLite keeps them current
# on every insert. Opening a version-1 store builds them once (holding the write lock meanwhile).
_BLOCK_INDEX = f"metrics_chart_blocks{CHART_BLOCK}"  # named by its block, which its expression fixes
_CHART_INDEXES = {
    _BLOCK_INDEX: f"CREATE INDEX IF NOT EXISTS {_BLOCK_INDEX} ON metrics "
                  f"(run_id, name, layer, tensor, step / {CHART_BLOCK}, value, step) WHERE {_CHART_ROWS}",
    "metrics_nonfinite": f"CREATE INDEX IF NOT EXISTS metrics_nonfinite ON metrics (run_id, step) WHERE {_NONFINITE}",
}
# A finished run of the very config a visitor asks for is shown instead of training it again (runs are seeded).
_CONFIG_INDEX = "CREATE INDEX IF NOT EXISTS runs_config ON runs (config, status)"
_INDEXES_SINCE = {2: list(_CHART_INDEXES.values()), 3: [_CONFIG_INDEX]}  # schema version -> indexes it added
# Schema version -> columns it added, for upgrades only (a new store has them in its CREATE TABLE).
_COLUMNS_SINCE = {4: ["ALTER TABLE runs ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0"],
                  5: ["ALTER TABLE runs ADD COLUMN description TEXT NOT NULL DEFAULT '{}'"]}
_CREATE_STORE = _SCHEMA.replace("COMMIT;", "".join(f"{sql};\n" for added in _INDEXES_SINCE.values()
                                                   for sql in added) + "COMMIT;")
_UPGRADES = {
    old: [sql for since in (_COLUMNS_SINCE, _INDEXES_SINCE) for version, added in since.items() if version > old
          for sql in added] + [f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'"]
    for old in UPGRADABLE_FROM
}
_METRIC_ROW = "step, name, layer, tensor, value"
_WHOLE_METRICS = (f"SELECT {_METRIC_ROW} FROM metrics INDEXED BY metrics_run_step WHERE run_id = ? AND {_CHART_ROWS} "
                  "ORDER BY step, rowid")
# Skipping from one series to the next along the block index: next tensor, next layer (layers are >= 0 and
# NULL sorts first), next name.
_NEXT_SERIES = [
    f"SELECT name, layer, tensor FROM metrics INDEXED BY {_BLOCK_INDEX} WHERE run_id = :run AND {after} "
    f"AND {_CHART_ROWS} ORDER BY name, layer, tensor LIMIT 1"
    for after in ("name = :name AND layer IS :layer AND tensor > :tensor",
                  "name = :name AND layer > coalesce(:layer, -1)", "name > :name")
]
_SERIES = f"run_id = :run AND name = :name AND layer IS :layer AND tensor = :tensor AND {_CHART_ROWS}"
_BLOCK_SEEK = (f"(SELECT {{column}} FROM metrics INDEXED BY {_BLOCK_INDEX} WHERE {_SERIES} "
               f"AND step / {CHART_BLOCK} = block.k AND value {{bound}} ORDER BY value {{order}} LIMIT 1)")
_LOWEST, _HIGHEST = (dict(bound=f">= -{_DBL_MAX}", order="ASC"), dict(bound=f"<= {_DBL_MAX}", order="DESC"))
# Per block: (step, value) of the lowest finite row, then of the highest; four seeks on the covering index.
_BLOCK_EXTREMES = f"""
WITH RECURSIVE block(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM block WHERE k < :last_block)
SELECT {", ".join(_BLOCK_SEEK.format(column=c, **end) for end in (_LOWEST, _HIGHEST) for c in ("step", "value"))}
FROM block"""
_SERIES_ENDS = " UNION ALL ".join(
    f"SELECT * FROM (SELECT step, value FROM metrics INDEXED BY metrics_run_name_step WHERE {_SERIES} "
    f"ORDER BY step {order} LIMIT 1)" for order in ("ASC", "DESC"))
_NONFINITE_METRICS = (f"SELECT {_METRIC_ROW} FROM metrics INDEXED BY metrics_nonfinite "
                      f"WHERE run_id = :run AND {_NONFINITE} AND {_CHART_ROWS}")
_EVENT_STEP_METRICS = (f"SELECT {_METRIC_ROW} FROM metrics INDEXED BY metrics_run_step WHERE run_id = :run "
                       f"AND step IN (SELECT step FROM events WHERE run_id = :run) AND {_CHART_ROWS}")
# The held-out metric is measured on a few steps only: read whole, apart from the chart rows (whose partial index
# it is not in, so stores made before it was recorded need no new index).
_HELDOUT_METRICS = (f"SELECT {_METRIC_ROW} FROM metrics INDEXED BY metrics_run_name_step WHERE run_id = ? "
                    f"AND name = '{HELDOUT_METRIC}' ORDER BY step")
# Per CHART_BLOCK-step block of a series: its last step, the mean of its finite values and how many there were
# (what smoothing a long run's training-batch metric reads, where the chart rows hold only block extremes).
_BLOCK_MEANS = (f"SELECT MAX(step), AVG(value), COUNT(value) FROM metrics INDEXED BY metrics_run_name_step "
                f"WHERE run_id = ? AND name = ? AND step >= ? AND tensor = '' AND abs(value) <= {_DBL_MAX} "
                f"GROUP BY step / {CHART_BLOCK} ORDER BY 1")
_STEP_RANGE = ("SELECT (SELECT MIN(step) FROM {table} WHERE run_id = :run), "
               "(SELECT MAX(step) FROM {table} WHERE run_id = :run)")
# Evenly spaced targets, each snapped to the next recorded step by one index seek.
_THINNED_STEPS = """
WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < :count)
SELECT DISTINCT (SELECT MIN(step) FROM {table} WHERE run_id = :run
                 AND step >= :first + (:last - :first) * n / (:count - 1)) FROM i"""
_LAYER0_NONFINITE = ("SELECT EXISTS (SELECT 1 FROM time_grads WHERE run_id = ? AND step = ? AND layer = 0 "
                     f"AND {_NONFINITE})")
_IN_STEPS = "run_id = :run AND step IN (SELECT value FROM json_each(:steps))"
_TIME_BUCKET = "(t - 1) * :buckets / :T"
_CHART_TIME_GRADS = f"""
SELECT step, layer, t, value FROM (SELECT step, layer, t, value, MIN(value) FROM time_grads
    WHERE {_IN_STEPS} AND NOT {_NONFINITE} GROUP BY step, layer, {_TIME_BUCKET})
UNION SELECT step, layer, t, value FROM (SELECT step, layer, MIN(t) AS t, value FROM time_grads
    WHERE {_IN_STEPS} AND {_NONFINITE} GROUP BY step, layer, {_TIME_BUCKET})
UNION SELECT step, layer, t, value FROM time_grads WHERE run_id = :run AND step = :profile
ORDER BY step, layer, t"""
_CHART_GATES = f"""
SELECT step, layer, gate, MIN(t), AVG(mean), AVG(frac_low), AVG(frac_high) FROM gates WHERE {_IN_STEPS}
GROUP BY step, layer, gate, {_TIME_BUCKET} ORDER BY step, layer, gate, 4"""


_TIME_GRAD_ENDS = f"""
SELECT step, MIN(NOT {_NONFINITE}), MAX(CASE WHEN t = :source THEN value END),
       MAX(CASE WHEN t = :target THEN value END)
FROM time_grads INDEXED BY time_grads_run_step WHERE run_id = :run AND layer = 0 GROUP BY step ORDER BY step"""


def _next_series(conn: sqlite3.Connection, run_id: int, key: tuple) -> tuple | None:
    """The (name, layer, tensor) after `key` among the run's chart rows, by at most three index seeks."""
    params = {"run": run_id, "name": key[0], "layer": key[1], "tensor": key[2]}
    for sql in _NEXT_SERIES:
        row = conn.execute(sql, params).fetchone()
        if row is not None:
            return row
    return None


def _chart_series(conn: sqlite3.Connection, run_id: int) -> list[tuple]:
    """Every (name, layer, tensor) of the run's chart rows, found by skipping along the index, not scanning it."""
    found, key = [], ("", None, "")
    while (key := _next_series(conn, run_id, key)) is not None:
        found.append(key)
    return found


def _series_extremes(conn: sqlite3.Connection, run_id: int, series: tuple, last_block: int) -> list[tuple]:
    """One series' rows that a chart must show: per block the lowest and highest finite row, first and last row."""
    name, layer, tensor = series
    params = {"run": run_id, "name": name, "layer": layer, "tensor": tensor, "last_block": last_block}
    pairs = [pair for row in conn.execute(_BLOCK_EXTREMES, params) for pair in (row[:2], row[2:])]
    pairs += conn.execute(_SERIES_ENDS, params).fetchall()
    return [(step, name, layer, tensor, value) for step, value in pairs if step is not None]


def _block_metrics(conn: sqlite3.Connection, run_id: int, steps_done: int) -> list[tuple]:
    """A long run's chart rows: block extremes and ends per series, and every non-finite and event-step row."""
    rows = [row for series in _chart_series(conn, run_id)
            for row in _series_extremes(conn, run_id, series, steps_done // CHART_BLOCK)]
    for sql in (_NONFINITE_METRICS, _EVENT_STEP_METRICS):
        rows += conn.execute(sql, {"run": run_id}).fetchall()
    unique = {row[:4]: row for row in rows}
    return sorted(unique.values(), key=lambda row: row[0])


def _thinned_steps(conn: sqlite3.Connection, table: str, run_id: int) -> list[int]:
    """At most CHART_RECORDED_STEPS - 2 evenly spaced recorded steps of `table`, first and last included."""
    first, last = conn.execute(_STEP_RANGE.format(table=table), {"run": run_id}).fetchone()
    if first is None:
        return []
    params = {"run": run_id, "first": first, "last": last, "count": CHART_RECORDED_STEPS - 2}
    return [r[0] for r in conn.execute(_THINNED_STEPS.format(table=table), params)]


def _profile_step(conn: sqlite3.Connection, run_id: int) -> int | None:
    """The latest recorded step whose layer-0 ||dL/dh_t|| are all finite: the profile the diagnosis reads."""
    latest = "SELECT MAX(step) FROM time_grads WHERE run_id = ? AND step < ?"
    step = conn.execute(latest, (run_id, 2**62)).fetchone()[0]
    while step is not None and conn.execute(_LAYER0_NONFINITE, (run_id, step)).fetchone()[0]:
        step = conn.execute(latest, (run_id, step)).fetchone()[0]
    return step


def _time_bucketing(conn: sqlite3.Connection, table: str, run_id: int, step: int) -> dict:
    """Bucket parameters for `table`: T (its longest sequence at `step`) into at most CHART_TIME_BUCKETS."""
    T = conn.execute(f"SELECT MAX(t) FROM {table} WHERE run_id = ? AND step = ?", (run_id, step)).fetchone()[0]
    return {"T": T, "buckets": min(T, CHART_TIME_BUCKETS)}


def _chart_time_grads(conn: sqlite3.Connection, run_id: int) -> list[tuple]:
    """Thinned time-gradient rows from which heatmap cells and the time profile come out as from all rows."""
    # Per t-bucket the smallest finite and the first non-finite row, and the latest finite step whole.
    profile = _profile_step(conn, run_id)
    steps = sorted(set(_thinned_steps(conn, "time_grads", run_id)) | ({profile} - {None}))
    if not steps:
        return []
    params = {"run": run_id, "steps": json.dumps(steps), "profile": profile,
              **_time_bucketing(conn, "time_grads", run_id, steps[-1])}
    return conn.execute(_CHART_TIME_GRADS, params).fetchall()


def _chart_gates(conn: sqlite3.Connection, run_id: int) -> list[tuple]:
    """Thinned gate rows; for long sequences one row per t-bucket (its means, at its first t)."""
    steps = _thinned_steps(conn, "gates", run_id)
    if not steps:
        return []
    params = {"run": run_id, "steps": json.dumps(steps), **_time_bucketing(conn, "gates", run_id, steps[-1])}
    return conn.execute(_CHART_GATES, params).fetchall()


def _export_folder(out: Path) -> list[Path]:
    """Make the export folder `out` if missing and return the folders made; refuse a path that is not one."""
    if out.exists() and not out.is_dir():
        raise StoreError(f"cannot export into {out}: it exists and is not a folder; pass a folder path to --out")
    missing = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot export into {out}: cannot make the folder ({e.strerror}); "
                         "pass a folder you can write to --out") from e
    return missing


def _used_bytes(conn: sqlite3.Connection) -> int:
    pages, free, size = (conn.execute(f"PRAGMA {name}").fetchone()[0]
                         for name in ("page_count", "freelist_count", "page_size"))
    return (pages - free) * size


EXPORT_CHUNK_ROWS = 50_000  # rows an export holds in memory at a time
_ARROW_TYPES = {"int64": "int64", "Int64": "int64", "float64": "float64", "object": "string"}


def _export_table(conn: sqlite3.Connection, run_id: int, table: str, fmt: str, path: Path) -> None:
    """One table of one run into `path`, EXPORT_CHUNK_ROWS rows at a time, in the order `load` gives."""
    columns = _TABLES[table]
    cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table} INDEXED BY {table}_run_step "
                          "WHERE run_id = ? ORDER BY step, rowid", (run_id,))
    chunks = iter(lambda: cursor.fetchmany(EXPORT_CHUNK_ROWS), [])
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            frame([], columns).to_csv(f, index=False)
            for rows in chunks:
                frame(rows, columns).to_csv(f, index=False, header=False)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    typed = pa.schema([(c, getattr(pa, _ARROW_TYPES[DTYPES[c]])()) for c in columns])
    empty = pa.Table.from_pandas(frame([], columns), schema=typed, preserve_index=False)
    schema = empty.schema  # with pandas' metadata, so read_parquet gives back the nullable Int64 columns
    with pq.ParquetWriter(path, schema) as writer:
        writer.write_table(empty)  # an empty table still gets its columns
        for rows in chunks:
            writer.write_table(pa.Table.from_pandas(frame(rows, columns), schema=schema, preserve_index=False))


class Store:
    """All runs in one SQLite file. Each transaction borrows a connection from a small pool, so threads and
    processes can share the file and short-lived threads (one per page redraw) leave no connection behind."""

    def __init__(self, path: str | os.PathLike | None = None, create: bool = True):
        """Open the store at `path` (default: $GFL_DB or runs/runs.sqlite). With `create` (for commands that
        write runs) a missing or empty file becomes a new store; without it (for commands that only read or
        delete) that is refused and nothing is made. A file that is not a store is refused and left untouched."""
        self.path = Path(default_db_path() if path is None else path).expanduser().absolute()
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        size = _existing_size(self.path)
        if size:
            if _validate(self.path) in _UPGRADES:
                self._upgrade()
            return
        if not create:
            raise StoreError(f"no run store at {self.path}; `python -m diagnostics train` makes one there "
                             "(or pass --db with the path of an existing store)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create a store at {self.path}: cannot make its folder "
                             f"({e.strerror}); pass another --db path") from e
        # IF NOT EXISTS throughout: another process may be creating it too
        self._script("PRAGMA journal_mode = WAL;\n" + _CREATE_STORE, "cannot create a store")

    def _upgrade(self) -> None:
        """Bring an older store to SCHEMA_VERSION in one transaction; the version is read again inside it, so
        two processes opening the same old store upgrade it once."""
        try:
            with self._transaction("BEGIN IMMEDIATE") as conn:
                version = int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
                for sql in _UPGRADES.get(version, []):
                    conn.execute(sql)
        except StoreError as e:
            raise StoreError(f"cannot upgrade the store at {self.path}: {e}") from e

    def _script(self, script: str, failure: str) -> None:
        try:
            with self._connection() as conn:
                conn.executescript(script)
        except sqlite3.Error as e:
            raise _store_error(f"{failure} at {self.path}", e) from e

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """An idle connection, or a new one; one user at a time, returned to the pool (or closed) afterwards."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA foreign_keys = ON")
        try:
            yield conn
        finally:
            with self._lock:
                keep = len(self._idle) < MAX_IDLE_CONNECTIONS and not conn.in_transaction
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        """All-or-nothing writes (BEGIN IMMEDIATE) or one consistent snapshot for reads (BEGIN). SQLite's own
        errors (a full disk, a read-only file, a lock held too long) come out as one-line StoreErrors."""
        try:
            with self._connection() as conn:
                conn.execute(begin)
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:  # SQLite may have rolled back by itself (a full disk does)
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise  # a bug in the caller's rows, not something the user can fix
        except sqlite3.Error as e:
            raise _store_error(f"the store at {self.path} failed", e) from e

    def _row(self, conn: sqlite3.Connection, run_id: int) -> tuple:
        if isinstance(run_id, bool) or not isinstance(run_id, int) or not 1 <= run_id <= MAX_RUN_ID:
            raise StoreError(f"no run {quoted(run_id)} in {self.path}: run ids are whole numbers from 1 to "
                             f"{MAX_RUN_ID}; `python -m diagnostics runs` lists them")
        row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in {self.path}; `python -m diagnostics runs` lists them")
        return row

    def create_run(self, config: dict, description: dict | None = None) -> int:
        """Register a run as "running" by this process, before its first step is written; `description` is
        the recorded model's (`description.ModelDescription.to_dict()`), which the verdicts read."""
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._transaction("BEGIN IMMEDIATE") as conn:
            cur = conn.execute(
                "INSERT INTO runs (created, config, status, steps_done, summary, pid, host, heartbeat, description)"
                " VALUES (?, ?, 'running', 0, '{}', ?, ?, ?, ?)",
                (created, strict_json(config), os.getpid(), socket.gethostname(), time.time(),
                 strict_json(description or {})),
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

    def list_runs(self, summary_keys: tuple[str, ...] | None = None, limit: int | None = None) -> list[RunInfo]:
        """Every run (or the newest `limit`), newest first, as the CLI and the run picker show them. With
        `summary_keys` each summary holds only those keys, read inside SQLite: a page listing 20 000 runs then
        parses a few numbers per run instead of every run's whole summary."""
        summary = "summary"
        if summary_keys is not None:
            if not all(key.isidentifier() for key in summary_keys):
                raise StoreError(f"summary keys must be plain names, got {summary_keys!r}")
            summary = "json_object({})".format(", ".join(f"'{k}', json_extract(summary, '$.{k}')"
                                                         for k in summary_keys) or "")
        columns = _RUN_COLUMNS.replace("summary", summary)
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(f"SELECT {columns} FROM runs ORDER BY id DESC LIMIT ?",
                                (-1 if limit is None else limit,)).fetchall()
        return [_run_info(row) for row in rows]

    def count_runs(self) -> int:
        with self._transaction("BEGIN") as conn:
            return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def row_counts(self, run_id: int) -> dict[str, int]:
        """How many rows each table holds for one run (counted on the run's index, nothing loaded)."""
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            return {table: conn.execute(f"SELECT COUNT(*) FROM {table} INDEXED BY {table}_run_step WHERE run_id = ?",
                                        (run_id,)).fetchone()[0] for table in _TABLES}

    def find_finished(self, config: dict) -> int | None:
        """The newest run of exactly this config that ended on its own ("completed" or "diverged"), if any: runs
        are seeded, so training it again would give the same numbers."""
        with self._transaction("BEGIN") as conn:
            row = conn.execute("SELECT MAX(id) FROM runs INDEXED BY runs_config WHERE config = ? "
                               "AND status IN ('completed', 'diverged')", (strict_json(config),)).fetchone()
        return row[0]

    def load(self, run_id: int, since_step: int = 0) -> RunData:
        """A run's tables from one consistent snapshot; `since_step` lets a live view fetch only new steps."""
        tables = {}
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            for table, columns in _TABLES.items():
                sql = f"SELECT {', '.join(columns)} FROM {table} WHERE run_id = ? AND step > ? ORDER BY step, rowid"
                tables[table] = frame(conn.execute(sql, (run_id, since_step)).fetchall(), columns)
        return RunData(**tables)

    def load_for_charts(self, run_id: int) -> RunData:
        """The rows the lab's charts draw, read so that 100 000 steps cost about twice what 1 000 do.

        - metrics: the chart rows (CHART_METRICS, CHART_TENSORS), whole for runs of up to
          CHART_WHOLE_STEPS steps; for longer runs, per CHART_BLOCK-step block the min and max finite row of
          each series, plus each series' first and last row, every non-finite row and every row at an event step;
          the held-out metric whole.
        - time_grads, gates: at most CHART_RECORDED_STEPS evenly spaced recorded steps (the first and last
          included; for time_grads also the latest step whose layer 0 is finite, in full). Sequences longer
          than CHART_TIME_BUCKETS are bucketed in t: time_grads keep per bucket its smallest finite and its
          first non-finite row, gates one row of bucket means at the bucket's first t.
        - events: all of them.
        """
        long_run = self.get_run(run_id).steps_done > CHART_WHOLE_STEPS
        with self._transaction("BEGIN") as conn:
            steps_done = self._row(conn, run_id)[4]
            metrics = (_block_metrics(conn, run_id, steps_done) if long_run
                       else conn.execute(_WHOLE_METRICS, (run_id,)).fetchall())
            metrics += conn.execute(_HELDOUT_METRICS, (run_id,)).fetchall()
            time_grads = _chart_time_grads(conn, run_id)
            gates = _chart_gates(conn, run_id)
            sql = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE run_id = ? ORDER BY step, rowid"
            events = conn.execute(sql, (run_id,)).fetchall()
        return RunData(metrics=frame(metrics, METRIC_COLUMNS), time_grads=frame(time_grads, TIME_GRAD_COLUMNS),
                       gates=frame(gates, GATE_COLUMNS), events=frame(events, EVENT_COLUMNS))

    def load_for_diagnosis(self, run_id: int, names: tuple[str, ...], tensor_prefix: str) -> RunData:
        """The rows a verdict reads, so diagnosing a long run does not load it whole: the metrics `names` that
        are aggregates (tensor "") or belong to tensors named `tensor_prefix`…, the gates of the last recorded
        step and every event. Gradients through time come from `time_grad_ends` and `time_grad_profile`."""
        marks = ", ".join("?" * len(names))
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            metrics = conn.execute(
                f"SELECT {_METRIC_ROW} FROM metrics INDEXED BY metrics_run_name_step WHERE run_id = ? "
                f"AND name IN ({marks}) AND (tensor = '' OR substr(tensor, 1, ?) = ?) ORDER BY step, rowid",
                (run_id, *names, len(tensor_prefix), tensor_prefix)).fetchall()
            gates = conn.execute(
                f"SELECT {', '.join(GATE_COLUMNS)} FROM gates WHERE run_id = :run AND step = "
                "(SELECT MAX(step) FROM gates WHERE run_id = :run) ORDER BY rowid", {"run": run_id}).fetchall()
            events = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE run_id = ? "
                                  "ORDER BY step, rowid", (run_id,)).fetchall()
        return RunData(metrics=frame(metrics, METRIC_COLUMNS), gates=frame(gates, GATE_COLUMNS),
                       events=frame(events, EVENT_COLUMNS))

    def time_grad_ends(self, run_id: int, source: int, target: int) -> tuple[pd.DataFrame, int] | None:
        """Per recorded step of layer 0: whether its whole profile is finite and ||dL/dh_t|| at `source` and at
        `target` clamped to the last recorded t (NaN past it), computed inside SQLite (the input of
        `gradflow.reach_of_ends`), and that clamped target; None when layer 0 has no recorded profile."""
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            last_t = conn.execute("SELECT MAX(t) FROM time_grads WHERE run_id = ? AND layer = 0",
                                  (run_id,)).fetchone()[0]
            if last_t is None:
                return None
            target = min(target, last_t)
            rows = conn.execute(_TIME_GRAD_ENDS, {"run": run_id, "source": source, "target": target}).fetchall()
        ends = pd.DataFrame(rows, columns=["step", "finite", "source", "target"]).set_index("step")
        return ends.astype({"finite": bool, "source": float, "target": float}), target

    def time_grad_profile(self, run_id: int, step: int) -> list[float]:
        """Layer 0's ||dL/dh_t|| for t = 1, 2, … at one recorded step, NaN where it was not finite."""
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            rows = conn.execute("SELECT value FROM time_grads INDEXED BY time_grads_run_step WHERE run_id = ? "
                                "AND step = ? AND layer = 0 ORDER BY t", (run_id, step))
            return [math.nan if value is None else value for (value,) in rows]

    def global_series(self, run_id: int, name: str) -> pd.DataFrame:
        """A global metric (tensor "") as step, value: whole for runs of up to CHART_WHOLE_STEPS steps, else
        its `block_means` at each block's last step (NaN/±Inf rows are then left out)."""
        if self.get_run(run_id).steps_done > CHART_WHOLE_STEPS:
            return self.block_means(run_id, name)[["step", "value"]]
        with self._transaction("BEGIN") as conn:
            rows = conn.execute("SELECT step, value FROM metrics INDEXED BY metrics_run_name_step WHERE run_id = ? "
                                "AND name = ? AND tensor = '' ORDER BY step", (run_id, name)).fetchall()
        return pd.DataFrame(rows, columns=["step", "value"]).astype({"step": "int64", "value": "float64"})

    def block_means(self, run_id: int, name: str, from_step: int = 0) -> pd.DataFrame:
        """A global metric's mean per CHART_BLOCK steps from `from_step` (a block's first step) on: step (the
        block's last), value (mean of its finite values), count (how many). It reads every row it averages."""
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            rows = conn.execute(_BLOCK_MEANS, (run_id, name, from_step)).fetchall()
        return pd.DataFrame(rows, columns=["step", "value", "count"]).astype(
            {"step": "int64", "value": "float64", "count": "int64"})

    def recorded_steps(self, run_id: int) -> list[int]:
        """The steps with a per-time-step gradient profile (layer 0), in order: what a scrubber can show."""
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            rows = conn.execute("SELECT DISTINCT step FROM time_grads INDEXED BY time_grads_run_step "
                                "WHERE run_id = ? AND layer = 0 ORDER BY step", (run_id,))
            return [step for (step,) in rows]

    def time_grads_at(self, run_id: int, step: int) -> pd.DataFrame:
        """Every layer's ||dL/dh_t|| at one recorded step: layer, t, value (NaN where it was not finite)."""
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            rows = conn.execute("SELECT layer, t, value FROM time_grads INDEXED BY time_grads_run_step "
                                "WHERE run_id = ? AND step = ? ORDER BY layer, t", (run_id, step)).fetchall()
        frame = pd.DataFrame(rows, columns=["layer", "t", "value"])
        return frame.astype({"layer": "int64", "t": "int64", "value": "float64"})

    def save_checkpoint(self, run_id: int, step: int, weights: bytes) -> None:
        """Keep a run's weights (serialised state dict) so pages can look inside the trained model later."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            self._row(conn, run_id)
            conn.execute("INSERT OR REPLACE INTO checkpoints (run_id, step, weights) VALUES (?, ?, ?)",
                         (run_id, step, sqlite3.Binary(weights)))

    def load_checkpoint(self, run_id: int, step: int | None = None) -> tuple[int, bytes] | None:
        """(step, weights) of the run's checkpoint at `step` (None: its latest), or None when it has none."""
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            if step is None:
                row = conn.execute("SELECT step, weights FROM checkpoints WHERE run_id = ? ORDER BY step DESC "
                                   "LIMIT 1", (run_id,)).fetchone()
            else:
                row = conn.execute("SELECT step, weights FROM checkpoints WHERE run_id = ? AND step = ?",
                                   (run_id, step)).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def checkpoint_steps(self, run_id: int) -> list[int]:
        """The training steps whose weights the run kept, ascending (0: its initial weights)."""
        with self._transaction("BEGIN") as conn:
            self._row(conn, run_id)
            rows = conn.execute("SELECT step FROM checkpoints WHERE run_id = ? ORDER BY step", (run_id,)).fetchall()
        return [row[0] for row in rows]

    def delete(self, run_id: int) -> None:
        """Remove one run and its rows (cascading), leaving every other run as it was. A run still training is
        refused: its writer would fail on its next batch and its owner would lose what they are watching."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            if _run_info(self._row(conn, run_id)).status == "running":
                raise StoreError(f"run {run_id} is still training; stop it first (Stop in the Lab, Ctrl-C in the "
                                 "shell that trains it), then delete it")
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def pin_if_first(self, run_id: int) -> bool:
        """Pin the run unless a run of the same config is pinned already (a lesson's fresh reruns must not pile
        up where the quota cannot reach them); whether it was pinned."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            self._row(conn, run_id)
            return conn.execute("UPDATE runs SET pinned = 1 WHERE id = :run AND NOT EXISTS (SELECT 1 FROM runs "
                                "INDEXED BY runs_config WHERE config = (SELECT config FROM runs WHERE id = :run) "
                                "AND pinned = 1)", {"run": run_id}).rowcount == 1

    def pin(self, run_id: int, pinned: bool = True) -> None:
        """Keep a run when `prune` makes room (or, with `pinned` False, let it go again)."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            self._row(conn, run_id)
            conn.execute("UPDATE runs SET pinned = ? WHERE id = ?", (int(pinned), run_id))

    def used_bytes(self) -> int:
        """Bytes of the file that hold data: deleted runs' pages are free and reused by the next rows, so the
        file stays at the size of the most it ever held while this counts what it holds now."""
        with self._transaction("BEGIN") as conn:
            return _used_bytes(conn)

    def prune(self, quota_bytes: int, keep: frozenset[int] = frozenset()) -> list[int] | None:
        """Delete the oldest runs that are neither pinned, training nor in `keep` until the store holds at most
        `quota_bytes`, and return their ids. All or nothing, in one transaction: when deleting every run that may
        go would still leave more than `quota_bytes`, nothing is deleted and None is returned."""
        pruned: list[int] = []
        try:
            with self._transaction("BEGIN IMMEDIATE") as conn:
                rows = conn.execute("SELECT id, status, pid, host, heartbeat FROM runs WHERE pinned = 0 ORDER BY id")
                candidates = [run_id for run_id, status, pid, host, heartbeat in rows.fetchall() if run_id not in keep
                              and not (status == "running" and _writer_alive(pid, host, heartbeat))]
                while _used_bytes(conn) > quota_bytes:  # the page counts see this transaction's own deletes
                    if not candidates:
                        raise _NoRoom  # deleting everything allowed would not do: roll it all back
                    pruned.append(candidates.pop(0))
                    conn.execute("DELETE FROM runs WHERE id = ?", (pruned[-1],))
        except _NoRoom:
            return None
        return pruned

    def export(self, run_id: int, fmt: str, out: str | os.PathLike) -> list[Path]:
        """Write a run as one file per table plus run.json into directory `out`, for tools outside this project.

        Streamed: rows go from one read snapshot to the files EXPORT_CHUNK_ROWS at a time, so a long run is
        never in memory whole. All or nothing: the files are written under temporary names and renamed once every
        one is complete, so a full disk or an unwritable folder leaves no partial export (and a folder made for
        it is removed)."""
        if fmt not in EXPORT_FORMATS:
            raise StoreError(f"unknown export format {quoted(fmt)}; use one of: {', '.join(EXPORT_FORMATS)}")
        self.get_run(run_id)  # an unknown run is refused before any folder is made
        out = Path(out).expanduser().absolute()
        made = _export_folder(out)
        names = [f"{table}.{fmt}" for table in _TABLES] + ["run.json"]
        staged: list[Path] = []
        try:
            with self._transaction("BEGIN") as conn:
                info = _run_info(self._row(conn, run_id))
                for name in names:
                    part = out / f".{name}.part-{os.getpid()}"
                    staged.append(part)
                    if name == "run.json":
                        part.write_text(strict_json(dataclasses.asdict(info)) + "\n")
                    else:
                        _export_table(conn, run_id, name.split(".")[0], fmt, part)
            for part, name in zip(staged, names):
                part.replace(out / name)
        except BaseException as e:
            for part in staged:
                part.unlink(missing_ok=True)
            if made:
                shutil.rmtree(made[-1], ignore_errors=True)
            if not isinstance(e, (OSError, StoreError)):
                raise
            why = e.strerror or e if isinstance(e, OSError) else e
            raise StoreError(f"cannot export run {run_id} into {out}: {why}; nothing was written") from e
        return [out / name for name in names]

    def export_zip(self, run_id: int, fmt: str = "csv") -> bytes:
        """`export` as one ZIP archive (run-N/metrics.csv, …, run-N/run.json), for a browser download."""
        with tempfile.TemporaryDirectory(prefix="gfl-export-") as tmp:
            paths = self.export(run_id, fmt, tmp)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in paths:
                    archive.write(path, f"run-{run_id}/{path.name}")
        return buffer.getvalue()

    def close(self) -> None:
        """Close the idle connections, which also checkpoints the WAL when this is the last one."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


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
        """Buffer one step's rows; commits the first step, then when `flush_every` steps or FLUSH_SECONDS have
        accumulated."""
        if self._closed:
            raise StoreError(f"the writer of run {self.run_id} is closed")
        for table, rows in zip(_TABLES, (metrics, time_grads, gates, events)):
            self._rows[table].extend((self.run_id, *row) for row in rows)
        self._pending += 1
        self._step = step
        if (self._pending >= self._flush_every or time.monotonic() - self._flushed_at >= FLUSH_SECONDS
                or self.steps_done == 0):  # the first step at once: a live view draws it without waiting
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
