"""`python -m bench [--quick] [--out PATH] [--only P1,P3] [--threads N]`: every benchmark in one run, a table of
ratios on stdout and the numbers in a JSON file.

Each ratio is A ÷ B measured side by side in one process: training loops run in lock-step (one step of A, one
of B, ...), so load from other processes and thermal drift hit both; per-step times are medians after a warm-up.
Targets judge the wall-clock ratio; the CPU-time ratio (each loop thread's own CPU seconds) is printed beside
it because on a shared machine it is the steadier of the two. With `--only`, the cases not measured keep their
results from the existing JSON file (each case says when it was measured), so a long case can be run apart.
D1 is not a ratio: it scores the diagnosis on a labelled corpus of runs (see `bench.diagnosis`); B1 compares the
step budget's estimates with measured steps (`bench.budget`); P8 measures a real server with 1, 10 and 30 browser
viewers of one live run (`bench.viewers`); M1 the memory of a long stored run's verdict and export, streamed and
loaded whole (`bench.streaming`); L1 how live a lesson looks in Chromium (`bench.liveview`); P9 `watch` in a
user's own loop beside wandb.watch and TensorBoard (`bench.peers`).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import budget, charts, diagnosis, liveview, peers, streaming, training, viewers, watching
from .training import Window

CELLS = ("rnn", "lstm", "gru")  # the vanilla RNN with tanh, the one with a fused kernel and most use

CASES = {  # key: (what A ÷ B compares, target ratio or MB)
    "P1": ("full recording every step ÷ the same unrolled training with record_every=0", 1.15),
    "P2": ("lab training, record_every=10 ÷ plain PyTorch training with the fused module", 1.15),
    "P3": ("plain training step through the unrolled cells ÷ the same through the fused module", 1.5),
    "P4": ("lab training, record_every=10, into the SQLite store ÷ into memory", 1.05),
    "P5": ("lab chart data of a stored 100 000-step run ÷ of a 1 000-step run", 3.0),
    "P6": ("resident memory growth (MB) over a 20 000-step run recording every step into the store", 100.0),
    "P7": ("a dashboard run's step while its Lab page draws the charts every second ÷ while nobody watches", 1.15),
    "P8": ("server CPU per second and time to first chart with 1, 10 and 30 viewers of one live run", None),
    "D1": ("precision and recall of problem diagnoses per kind on a labelled corpus of real runs", 1.0),
    "B1": ("measured ÷ estimated seconds of a recorded step over the allowed config space", 2.0),
    "M1": ("peak memory of a stored run's verdict and export, streamed ÷ loaded whole", 0.5),
    "L1": ("a lesson link in Chromium: first chart (target 2 s), gaps between visible updates (1.5 s)", None),
    "P9": ("watch(every=10) in a user's loop ÷ plain training, beside wandb.watch and TensorBoard histograms",
           peers.TARGET),
}
WHOLE_CASE_RUNS = {"D1": diagnosis.corpus_case, "B1": budget.budget_case, "P8": viewers.viewers_case,
                   "M1": streaming.streaming_case, "L1": liveview.live_view_case, "P9": peers.peers_case}
WHOLE_CASES = {"D1": diagnosis.table, "B1": budget.table, "P8": viewers.table, "M1": streaming.table,
               "L1": liveview.table, "P9": peers.table}  # their tables


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or `--quick`'s smoke run (same code, far fewer and shorter steps)."""

    seq_lens: tuple[int, ...]
    window: Window  # P1–P3
    store_window: Window  # P4: whole flush cycles of 50 steps
    chart_steps: tuple[int, int]
    chart_reps: int
    memory_steps: int
    watch_windows: tuple[float, int]  # P7: seconds per window, windows per side
    every_cell: bool = True  # False (--quick): each case measures one cell, the cases in turn cover all three


FULL = Plan((50, 200), Window(10, 40), Window(10, 200), (100_000, 1_000), 9, 20_000, (5.0, 3))
QUICK = Plan((20,), Window(1, 4), Window(1, 50), (1_500, 500), 1, 200, (1.5, 1), every_cell=False)


def cases(plan: Plan, threads: int) -> dict:
    """Each case as `run(cell, T)`."""
    return {"P1": lambda cell, T: training.recording_cost(cell, T, plan.window),
            "P2": lambda cell, T: training.against_pytorch(cell, T, plan.window),
            "P3": lambda cell, T: training.unrolled_vs_fused(cell, T, plan.window),
            "P4": lambda cell, T: training.store_cost(cell, T, plan.store_window),
            "P5": lambda cell, T: charts.chart_scaling(cell, T, *plan.chart_steps, plan.chart_reps),
            "P6": lambda cell, T: memory_case(cell, T, plan.memory_steps, threads),
            "P7": lambda cell, T: watching.watching_cost(cell, T, *plan.watch_windows)}


def memory_case(cell: str, T: int, steps: int, threads: int) -> dict:
    """P6 in a fresh interpreter, so only this run's memory is counted."""
    done = subprocess.run([sys.executable, "-m", "bench.memory", cell, str(T), str(steps), str(threads)],
                          capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _progress(row: dict) -> None:
    print(f"  {row['cell']} T={row['T']}: {row.get('ratio', row.get('growth_mb'))}", file=sys.stderr, flush=True)


def judge(key: str, rows: list[dict], quick: bool) -> dict:
    target = CASES[key][1]
    value = "growth_mb" if key == "P6" else "ratio"
    for row in rows:
        if value in row:
            row["met"] = row[value] <= target
    return {"what": CASES[key][0], "target": target, "measured": time.strftime("%Y-%m-%d %H:%M"), "quick": quick,
            "results": rows}


def per_case(plan: Plan, run, key: str) -> list[dict]:
    """`run(cell, T)` for every cell (or, in a quick plan, case `key`'s one) and sequence length of the plan,
    reporting progress."""
    rows = []
    cells = CELLS if plan.every_cell else (CELLS[list(CASES).index(key) % len(CELLS)],)
    for cell in cells:
        for T in plan.seq_lens:
            rows.append(run(cell, T))
            _progress(rows[-1])
    return rows


def table(report: dict) -> str:
    """One line per measurement: A and B (wall-clock ms, or MB for P6), their ratio, the CPU-time ratio."""
    lines = [f"{'case':4}  {'cell':4}  {'T':>6}  {'A':>11}  {'B':>11}  {'ratio':>6}  {'cpu':>6}  {'target':>6}  met"]
    for key in CASES:
        if key not in report or key in WHOLE_CASES:
            continue
        case = report[key]
        for row in case["results"]:
            if key == "P6":
                a, b, ratio = f"{row['rss_peak_mb']}MB", f"{row['rss_warm_mb']}MB", f"+{row['growth_mb']}MB"
            else:
                a, b, ratio = f"{row['a_ms']:.1f}ms", f"{row['b_ms']:.1f}ms", f"{row['ratio']:.2f}"
            cpu = f"{row['cpu_ratio']:.2f}" if "cpu_ratio" in row else "-"
            T = row.get("T", row.get("big_steps", ""))
            lines.append(f"{key:4}  {row.get('cell', ''):4}  {T!s:>6}  {a:>11}  {b:>11}  {ratio:>6}  {cpu:>6}  "
                         f"{case['target']:>6}  {'yes' if row['met'] else 'NO'}")
    lines += [render(report[key]) for key, render in WHOLE_CASES.items() if key in report]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under a minute)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results.json",
                        help="where to write the JSON report (default: bench/results.json)")
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated cases to run, e.g. P1,P3")
    # One intra-op thread by default: on a shared 2-core machine, a second thread makes each small op wait for a
    # core another process holds (measured 5–19x slower for both sides), which would swamp every ratio.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides (default 1)")
    args = parser.parse_args(argv)
    asked = {part.strip().upper() for part in args.only.split(",") if part.strip()}
    if not asked or asked - set(CASES):
        parser.error(f"--only {args.only!r}: the cases are {', '.join(CASES)} (comma-separated)")
    only = [key for key in CASES if key in asked]
    plan = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    kept = json.loads(args.out.read_text()) if len(only) < len(CASES) and args.out.exists() else {}
    report: dict = {**kept, "meta": {"quick": args.quick, "torch": torch.__version__,
                                     "python": platform.python_version(), "threads": torch.get_num_threads(),
                                     "batch_size": 64, "hidden_size": 64, "window": vars(plan.window),
                                     "store_window": vars(plan.store_window), "measured": only}}
    run = cases(plan, args.threads)
    for key in only:
        print(f"{key}: {CASES[key][0]}", file=sys.stderr, flush=True)
        if key in WHOLE_CASES:  # one corpus, grid or server, not a ratio per cell and length
            report[key] = WHOLE_CASE_RUNS[key](args.quick)
            continue
        report[key] = judge(key, per_case(plan, run[key], key), args.quick)
    report["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"written to {args.out} in {report['meta']['seconds']} s")
    return report
