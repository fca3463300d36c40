"""The practitioner's example runs as README says, its runs land in the store, and the CLI lists them by model."""

import json
import os
import subprocess
import sys
from pathlib import Path

from diagnostics.description import ModelDescription
from diagnostics.store import Store

ROOT = Path(__file__).resolve().parents[1]


def run(*args, db):
    result = subprocess.run([sys.executable, *args, "--db", str(db)], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_the_watch_example_explodes_without_clipping_and_not_with_it(tmp_path):
    db = tmp_path / "runs.sqlite"
    clipped = run("examples/watch_lstm.py", "--steps", "20", db=db)
    unclipped = run("examples/watch_lstm.py", "--steps", "20", "--no-clip", db=db)
    assert clipped[-2].startswith(f"run 1 in {db}: completed after 20 steps, largest gradient norm ")
    assert clipped[-1].startswith("No exploding problem: the loss went from ")
    assert unclipped[-3].startswith(f"run 2 in {db}: diverged after 20 steps")
    assert unclipped[-2].startswith("first NaN/Inf at step ") and "(module lstm, layer " in unclipped[-2]
    assert unclipped[-1].startswith("Problem: exploding gradients (a value went non-finite)")
    with Store(db, create=False) as store:
        first = store.get_run(2).summary["first_nonfinite"]
        events = store.load(2).events
        described = ModelDescription.from_dict(store.get_run(1).description)
    assert first["module"] == "lstm" and first["step"] == int(events["step"].min()) <= 20
    assert [lane.name for lane in described.lanes()] == ["lstm layer 0", "lstm layer 0 reverse", "lstm layer 1",
                                                         "lstm layer 1 reverse"]
    listed = json.loads("\n".join(run("-m", "diagnostics", "runs", "--json", db=db)))
    assert [(r["id"], r["source"], r["name"], r["config"]) for r in listed] == [
        (2, "watch", "lstm-no-clip", "watched lstm-no-clip: lstm lstm H64x2 bidirectional"),
        (1, "watch", "lstm-clipped", "watched lstm-clipped: lstm lstm H64x2 bidirectional")]
