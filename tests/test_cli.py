"""`python -m diagnostics` end to end, as a user scripts it: real processes, a real store file."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from diagnostics.gradflow import time_gradient_fit
from diagnostics.store import Store
from tests.filesystems import mounted_tmpfs

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--hidden-size", "8", "--batch-size", "8", "--seq-len", "5"]


def cli(*args, db, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "diagnostics", *args, "--db", str(db)], capture_output=True,
                            text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def strict(line: str):
    """Parse strict JSON: NaN/Infinity tokens are rejected."""
    def reject(token):
        raise ValueError(f"non-strict JSON token {token}")
    return json.loads(line, parse_constant=reject)


def test_train_json_summary_has_every_documented_field(tmp_path):
    db = tmp_path / "runs.sqlite"
    out = cli("train", *FAST, "--steps", "12", "--record-every", "4", "--cell", "gru", "--json", "--quiet", db=db)
    summary = strict(out.stdout.strip().splitlines()[-1])
    for key in ("run_id", "status", "steps_done", "final_loss", "final_metric", "first_nonfinite", "max_grad_norm",
                "clip_rate", "time_grad_profile", "time_grad_ratio", "time_grad_gain", "memory_horizon", "diagnoses",
                "verdict", "learned", "train_seconds"):
        assert key in summary, key
    assert summary["status"] == "completed" and summary["steps_done"] == 12
    assert summary["first_nonfinite"] is None
    assert len(summary["time_grad_profile"]) == 5 + 2  # agreement: "the", subject, 5 fillers
    profile = summary["time_grad_profile"]
    assert summary["time_grad_ratio"] == pytest.approx(profile[0] / profile[-1])
    fit = time_gradient_fit(profile)  # the JSON's gain and horizon are the fit of the profile it prints
    assert summary["time_grad_gain"] == pytest.approx(fit.gain)
    if fit.horizon is None:
        assert summary["memory_horizon"] is None
    else:
        assert summary["memory_horizon"] == pytest.approx(fit.horizon)
    assert summary["learned"] is False and summary["verdict"].startswith("No exploding or vanishing problem")
    stored = Store(db).get_run(summary["run_id"])
    assert stored.status == "completed" and stored.steps_done == 12 and stored.config["cell"] == "gru"
    assert stored.summary["final_loss"] == summary["final_loss"]


def test_divergence_from_the_cli_is_located_and_json_stays_strict(tmp_path):
    db = tmp_path / "runs.sqlite"
    out = cli("train", "--activation", "relu", "--init", "normal", "--init-scale", "3", "--clip", "none",
              "--lr", "1", "--seq-len", "30", "--hidden-size", "16", "--batch-size", "16", "--steps", "20",
              "--json", "--quiet", db=db)
    summary = strict(out.stdout.strip().splitlines()[-1])
    assert summary["status"] == "diverged"
    first = summary["first_nonfinite"]
    assert first["tensor"] == "hidden" and first["layer"] == 0 and 1 <= first["time_step"] <= 32
    assert summary["verdict"] == "Problem: exploding gradients (a value went non-finite)."
    nonfinite = summary["diagnoses"][0]
    assert (nonfinite["kind"], nonfinite["rule"], nonfinite["severity"]) == ("exploding", "nonfinite", "problem")
    # clip_threshold is already 1 (the default), so the remedy changes only what differs; clipped steps of lr 1 with
    # momentum 0.9 could still move a weight by 10, so it lowers lr to keep them within 1
    assert nonfinite["remedies"][0] == {"label": "Clip the gradient norm at 1, learning rate 0.1",
                                        "changes": {"clip": "norm", "lr": 0.1}}


def test_the_text_summary_puts_the_verdict_before_each_problem_and_its_remedies(tmp_path):
    out = cli("train", "--activation", "relu", "--init", "normal", "--init-scale", "3", "--clip", "none",
              "--lr", "1", "--seq-len", "30", "--hidden-size", "16", "--batch-size", "16", "--steps", "20",
              "--quiet", db=tmp_path / "runs.sqlite")
    lines = out.stdout.strip().splitlines()
    verdict = lines.index("Problem: exploding gradients (a value went non-finite).")
    assert lines[verdict + 1].startswith("PROBLEM: exploding (nonfinite): The numbers overflowed: at step 2 ")
    assert lines[verdict + 2] == '  try: Clip the gradient norm at 1, learning rate 0.1  {"clip": "norm", "lr": 0.1}'
    assert any(line.startswith("‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ = ") and "gain per step" in line for line in lines[:verdict])


def test_runs_export_and_delete(tmp_path):
    db = tmp_path / "runs.sqlite"
    first = strict(cli("train", *FAST, "--steps", "3", "--json", "--quiet", db=db).stdout.splitlines()[-1])
    second = strict(cli("train", *FAST, "--steps", "4", "--seed", "7", "--json", "--quiet",
                        db=db).stdout.splitlines()[-1])
    runs = strict(cli("runs", "--json", db=db).stdout)
    assert [r["id"] for r in runs] == [second["run_id"], first["run_id"]]
    assert runs[0]["steps_done"] == 4 and "seed 7" in runs[0]["config"]

    out_dir = tmp_path / "export"
    cli("export", str(first["run_id"]), "--format", "csv", "--out", str(out_dir), db=db)
    metrics = pd.read_csv(out_dir / "metrics.csv")
    assert sorted(metrics[metrics.name == "loss"].step) == [1, 2, 3]
    assert metrics[(metrics.name == "loss") & (metrics.step == 3)].value.item() == pytest.approx(first["final_loss"])

    cli("delete", str(first["run_id"]), db=db)
    assert [r["id"] for r in strict(cli("runs", "--json", db=db).stdout)] == [second["run_id"]]


def test_pin_and_unpin_a_run(tmp_path):
    db = tmp_path / "runs.sqlite"
    run = strict(cli("train", *FAST, "--steps", "2", "--json", "--quiet", db=db).stdout.splitlines()[-1])
    assert [r["pinned"] for r in strict(cli("runs", "--json", db=db).stdout)] == [False]
    assert cli("pin", str(run["run_id"]), db=db).stdout == f"pinned run {run['run_id']}\n"
    assert [r["pinned"] for r in strict(cli("runs", "--json", db=db).stdout)] == [True]
    assert cli("runs", db=db).stdout.rstrip().endswith("(pinned)")
    assert cli("unpin", str(run["run_id"]), db=db).stdout == f"unpinned run {run['run_id']}\n"
    assert [r["pinned"] for r in strict(cli("runs", "--json", db=db).stdout)] == [False]
    missing = cli("pin", "999", db=db, check=False)
    assert (missing.returncode, missing.stderr.startswith("error: no run 999 in ")) == (2, True)


@pytest.mark.parametrize("args,message", [
    (["train", "--cell", "transformer"], "cell='transformer' is not valid; allowed: one of rnn, lstm, gru"),
    (["train", "--steps", "0"], "steps=0 is out of range; allowed: an integer from 1 to 100000"),
    (["train", "--lr", "fast"], "lr='fast' is not valid"),
    (["export", "1", "--format", "xlsx", "--out", "x"], "allowed: csv, parquet"),
    (["delete", "99"], "no run store at "),
    (["delete", "99999999999999999999"], "run '99999999999999999999' is not a run id: run ids are whole numbers"),
    (["export", "²", "--format", "csv", "--out", "x"], "run '²' is not a run id"),
    (["export", "9" * 10_000, "--format", "csv", "--out", "x"], "run '" + "9" * 58 + "… is not a run id"),
    (["train", "--cell", "lstm", "--hidden-size", "512", "--batch-size", "1024", "--seq-len", "1000"],
     "This run is too big for one training step on this server"),
], ids=["bad-cell", "zero-steps", "bad-lr", "bad-format", "no-store", "run-past-int64", "run-superscript",
        "run-10000-digits", "too-big"])
def test_bad_input_gets_a_message_not_a_traceback(tmp_path, args, message):
    result = cli(*args, db=tmp_path / "runs.sqlite", check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_foreign_file_is_refused_and_left_untouched(tmp_path):
    db = tmp_path / "notes.sqlite"
    db.write_bytes(b"my thesis notes, not a database")
    result = cli("runs", db=db, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr and str(db) in result.stderr
    assert db.read_bytes() == b"my thesis notes, not a database"


def test_killed_training_process_reads_back_as_interrupted(tmp_path):
    db = tmp_path / "runs.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "diagnostics", "train", *FAST, "--steps", "100000",
                             "--quiet", "--db", str(db)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if db.exists() and Store(db).list_runs() and Store(db).list_runs()[0].steps_done >= 100:
                break
        else:
            pytest.fail("the training process wrote nothing in 120 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = Store(db)
    run = store.list_runs()[0]
    assert run.status == "interrupted"
    losses = store.load(run.id).series("loss")
    assert len(losses) == run.steps_done >= 100
    assert list(losses.index) == list(range(1, run.steps_done + 1))


@pytest.mark.parametrize("args", [["runs"], ["runs", "--json"], ["delete", "3"],
                                  ["export", "3", "--format", "csv", "--out", "out"]],
                         ids=["runs", "runs-json", "delete", "export"])
def test_reading_commands_make_no_store(tmp_path, args):
    db = tmp_path / "sub" / "runs.sqlite"
    result = cli(*args, db=db, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"error: no run store at {db}; `python -m diagnostics train` makes one there "
                             "(or pass --db with the path of an existing store)\n")
    assert os.listdir(tmp_path) == []


def test_an_unknown_run_in_a_store_is_named(tmp_path):
    db = tmp_path / "runs.sqlite"
    Store(db).close()
    result = cli("delete", "99", db=db, check=False)
    assert (result.returncode, result.stderr) == (2, f"error: no run 99 in {db}; `python -m diagnostics runs` lists "
                                                     "them\n")


@pytest.mark.parametrize("db", ["/dev/null", "/etc/passwd/x/runs.sqlite"], ids=["dev-null", "under-a-file"])
def test_a_db_that_cannot_be_a_store_is_one_line(db):
    before = sorted(os.listdir("/dev")), sorted(os.listdir("/etc"))
    result = cli("train", *FAST, "--steps", "2", "--quiet", db=db, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ") and db in result.stderr
    assert (sorted(os.listdir("/dev")), sorted(os.listdir("/etc"))) == before


def test_export_onto_an_existing_file_is_refused_and_the_file_kept(tmp_path):
    db = tmp_path / "runs.sqlite"
    run = strict(cli("train", *FAST, "--steps", "2", "--json", "--quiet", db=db).stdout.splitlines()[-1])
    target = tmp_path / "report.csv"
    target.write_text("keep me")
    result = cli("export", str(run["run_id"]), "--format", "csv", "--out", str(target), db=db, check=False)
    assert (result.returncode, result.stderr) == (
        2, f"error: cannot export into {target}: it exists and is not a folder; pass a folder path to --out\n")
    assert target.read_text() == "keep me"


def test_a_full_disk_during_train_is_one_line_and_the_steps_written_stay(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "600k") as where:
        db = where / "runs.sqlite"
        result = cli("train", *FAST, "--steps", "5000", "--record-every", "1", "--quiet", db=db, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.startswith(f"error: the store at {db} failed: database or disk is full; free some space")
        with Store(db, create=False) as store:
            [run] = store.list_runs()
            assert run.status == "interrupted" and 0 < run.steps_done < 5000
            loss = store.load(run.id).metrics.query("name == 'loss'")
            assert loss["step"].tolist() == list(range(1, run.steps_done + 1))
