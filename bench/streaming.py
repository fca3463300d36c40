"""M1: peak memory of the end-of-run verdict and of an export of one long stored run, streamed (what the runner
and `export` do) ÷ with the run loaded whole (what they did before).

The run is trained once into a temporary store (an LSTM recording every step at T=200, so its time_grads and
gates tables hold millions of rows); then each side reads it in a fresh interpreter (`python -m bench.streaming
SIDE DB RUN_ID`), so nothing one side allocated counts for the other, and prints one JSON object. Memory is the
interpreter's peak resident set while the side ran (VmHWM, reset just before it through /proc/self/clear_refs, so
the peak of importing torch does not count) minus its resident set just before.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from diagnostics.config import RunConfig
from diagnostics.runner import run_into_store
from diagnostics.store import Store
from diagnostics.summary import RunSummary
from diagnostics.verdict import stored_verdict, verdict_of

from .memory import rss_mb

ROOT = Path(__file__).resolve().parents[1]
# Small hidden and batch sizes: what a recorded step stores grows with T × gates, not with them.
CONFIG = RunConfig(cell="lstm", hidden_size=16, batch_size=16, seq_len=198, steps=3000, record_every=1)
QUICK_CONFIG = CONFIG.replace(steps=30)
SIDES = ("verdict-streamed", "verdict-whole", "export-streamed", "export-whole")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _summary(info) -> RunSummary:
    fields = RunSummary.__dataclass_fields__
    return RunSummary(**{k: v for k, v in info.summary.items() if k in fields})


def side(name: str, db: str, run_id: int) -> dict:
    store = Store(db, create=False)
    info = store.get_run(run_id)
    config = RunConfig.from_dict(info.config)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set, to the current one
    before = rss_mb()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gfl-m1-") as out:
        if name == "verdict-streamed":
            headline = stored_verdict(_summary(info), store, run_id, config).headline
        elif name == "verdict-whole":
            headline = verdict_of(_summary(info), store.load(run_id), config).headline
        elif name == "export-streamed":
            store.export(run_id, "csv", out)
            headline = None
        else:
            data = store.load(run_id)
            for table in ("metrics", "time_grads", "gates", "events"):
                getattr(data, table).to_csv(Path(out) / f"{table}.csv", index=False)
            headline = None
    peak = _peak_rss_mb()
    return {"side": name, "peak_growth_mb": round(peak - before, 1), "seconds": round(time.perf_counter() - started, 2),
            "headline": headline}


def _run_side(name: str, db: Path, run_id: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.streaming", name, str(db), str(run_id)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def streaming_case(quick: bool) -> dict:
    config = QUICK_CONFIG if quick else CONFIG
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="gfl-m1-") as tmp:
        db = Path(tmp) / "runs.sqlite"
        with Store(db) as store:
            started = time.perf_counter()
            summary = run_into_store(config, store)
            train_seconds = time.perf_counter() - started
            rows = store.row_counts(summary.run_id)
            db_mb = store.used_bytes() / 1e6
        sides = {name: _run_side(name, db, summary.run_id) for name in SIDES}
    ratio = {kind: round(sides[f"{kind}-streamed"]["peak_growth_mb"]
                         / max(sides[f"{kind}-whole"]["peak_growth_mb"], 0.1), 3) for kind in ("verdict", "export")}
    return {"what": "peak memory growth of a stored run's verdict and CSV export, streamed ÷ loaded whole",
            "measured": time.strftime("%Y-%m-%d %H:%M"), "quick": quick, "config": config.summary(),
            "rows": rows, "store_mb": round(db_mb, 1), "train_seconds": round(train_seconds, 1),
            "same_verdict": sides["verdict-streamed"]["headline"] == sides["verdict-whole"]["headline"],
            "sides": sides, "ratio": ratio}


def table(case: dict) -> str:
    lines = [f"M1: {case['what']}", f"  run: {case['config']}; rows {case['rows']}; {case['store_mb']} MB in the store",
             f"  {'side':<18} {'peak growth':>12} {'seconds':>8}"]
    for s in case["sides"].values():
        lines.append(f"  {s['side']:<18} {s['peak_growth_mb']:>10.1f}MB {s['seconds']:>8.2f}")
    lines.append(f"  streamed ÷ whole: verdict {case['ratio']['verdict']}, export {case['ratio']['export']}; "
                 f"same verdict: {case['same_verdict']}")
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(side(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
