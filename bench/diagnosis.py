"""D1: the verdicts scored on a labelled corpus of real runs (`python -m bench --only D1`).

Every lesson variant and runs of other sizes, cells, tasks, optimisers and seeds are trained here with their own
seeds. Each run's label comes from what it did, computed below from its status, losses and held-out metric,
never from the rules:

- diverged: it stopped at a NaN/Inf or skipped a non-finite step; or its training loss diverged (ended at 10x both
  its first step's and a memoryless model's, or 1.5x above both where it started and a memoryless model's); or it
  lost what it had learned (its smoothed training metric once closed half the gap to perfect, its held-out metric
  at the end not a fifth of it);
- learned: its held-out metric closed at least a fifth of the gap from the score of a model that ignores the
  task's long-range dependency to a perfect score;
- did not learn: otherwise. Most runs in the corpus that do not learn are built so that the distance is what
  stops them (long dependencies, saturating activations, closed gates; each has a counterpart that learns); a
  few fail with a gradient that reaches, and show what the label cannot tell apart. Each run that did not learn
  is also trained with PATIENCE times its steps, reported beside it (stuck or slow), never used as its label.

A diverged run should get an exploding problem, one that did not learn a vanishing problem, one that learned no
problem at all. The report gives precision and recall of "problem" diagnoses per kind, names every miss, and
trains the first remedy of each problem run to say whether it cured it.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass

import numpy as np

from diagnostics import rundata as rd
from diagnostics.config import RunConfig, field_map
from diagnostics.lessons import EXPLODING, FAR, LESSONS, NEAR
from diagnostics.model import task_of
from diagnostics.remedies import VANISHING_CURES, remedies_for

DIVERGED, DID_NOT_LEARN, LEARNED = "diverged", "did not learn", "learned"
EXPECTED = {DIVERGED: {"exploding"}, DID_NOT_LEARN: {"vanishing"}, LEARNED: set()}
KINDS = ("exploding", "vanishing")
LEARNED_SKILL = 0.2  # share of the gap from the no-dependency score to perfect that counts as learning
ONCE_LEARNED_SKILL = 0.5  # ... and, reached by the training metric, as having learned something to lose
LOSS_FAR = 10.0  # x the larger of the first step's loss and a memoryless model's
LOSS_RISE = 1.5

PATIENCE = 4  # a run that did not learn is trained again with this many times its steps, to tell slow from stuck
SWEEP_SEEDS = range(5)


@dataclass(frozen=True)
class Entry:
    name: str
    config: RunConfig
    why: str  # what the run is there to show


def _lesson_entries() -> list[Entry]:
    return [Entry(f"lesson {item.number}: {variant.label}", variant.config, item.title)
            for item in LESSONS for variant in item.variants]


OTHER_ENTRIES = [
    # explosions at other seeds, sizes, cells, tasks and optimisers
    Entry("linear RNN ×1.3, seed 1", EXPLODING.replace(seed=1), "lesson 1 at another seed"),
    Entry("ReLU RNN N(0, 9/H), lr 1, T 32", RunConfig(activation="relu", init="normal", init_scale=3.0,
                                                      clip="none", lr=1.0, seq_len=30, steps=200),
          "the README's CLI example"),
    Entry("linear RNN ×1.2 on copy", RunConfig(task="copy", activation="linear", init="orthogonal",
                                                init_scale=1.2, clip="none", seq_len=20), "copy task"),
    Entry("linear RNN ×1.1 on adding, T 50", RunConfig(task="adding", activation="linear", init="orthogonal",
                                                       init_scale=1.1, clip="none", seq_len=50, steps=300),
          "adding task"),
    Entry("linear RNN ×1.3, H 128 × 2 layers", EXPLODING.replace(hidden_size=128, num_layers=2), "larger, deeper"),
    Entry("IRNN with Adam lr 0.1 on adding, T 100",
          RunConfig(task="adding", activation="relu", init="identity", clip="none", optimizer="adam", lr=0.1,
                    seq_len=100, steps=400), "Adam"),
    Entry("GRU, lr 20, no clipping", RunConfig(cell="gru", clip="none", lr=20.0, steps=300),
          "a gated cell whose weights grow without bound"),
    Entry("LSTM Xavier ×3, lr 10, no clipping",
          RunConfig(cell="lstm", init="xavier_uniform", init_scale=3.0, clip="none", lr=10.0, steps=300),
          "the loss runs away without a NaN"),
    Entry("tanh RNN N(0, 16/H), lr 2, clipped at 1",
          RunConfig(init="normal", init_scale=4.0, lr=2.0, steps=400), "the loss runs away under clipping"),
    Entry("tanh RNN N(0, 4/H), lr 1, adding T 50",
          RunConfig(init="normal", init_scale=2.0, lr=1.0, task="adding", seq_len=50, steps=300),
          "gradients above 1 for hundreds of steps"),
    Entry("2-layer LSTM on lesson 3's sentences", FAR.replace(cell="lstm", num_layers=2),
          "learns, then a spike throws it back"),
    # vanishing at other sizes, cells, tasks and seeds
    Entry("tanh RNN H 64, seed 1", FAR.replace(hidden_size=64, seed=1), "size and seed"),
    Entry("tanh RNN, 25 fillers, seed 2", FAR.replace(seq_len=25, seed=2), "longer distance"),
    Entry("2-layer tanh RNN", FAR.replace(num_layers=2), "deeper"),
    Entry("tanh RNN W_hh × 0.5, seed 3", FAR.replace(init_scale=0.5, seed=3), "smaller recurrent weights"),
    Entry("ReLU RNN, default init", FAR.replace(activation="relu"), "dead units"),
    Entry("sigmoid RNN, 10 fillers", NEAR.replace(activation="sigmoid", seq_len=10, steps=500), "sigmoid"),
    Entry("tanh RNN on adding, T 100", RunConfig(task="adding", seq_len=100, steps=800, hidden_size=32),
          "adding task"),
    Entry("LSTM, forget bias −2, 30 fillers", FAR.replace(cell="lstm", forget_bias=-2.0, seq_len=30),
          "a closed forget gate"),
    Entry("GRU, update bias −2, 30 fillers", FAR.replace(cell="gru", forget_bias=-2.0, seq_len=30),
          "a closed update gate"),
    Entry("LSTM, seed 2", FAR.replace(cell="lstm", seed=2), "an LSTM whose gradient dies while it trains"),
    Entry("LSTM, forget bias −3, on copy with Adam",
          RunConfig(task="copy", cell="lstm", forget_bias=-3.0, seq_len=20, steps=800, hidden_size=64,
                    optimizer="adam", lr=0.01), "copy task"),
    # healthy runs that learn
    Entry("LSTM on adding, T 50, Adam", RunConfig(cell="lstm", task="adding", seq_len=50, steps=800,
                                                  optimizer="adam", lr=0.01, hidden_size=32), "adding task"),
    Entry("LSTM, forget bias 3, on adding, T 100",
          RunConfig(cell="lstm", forget_bias=3.0, task="adding", seq_len=100, steps=800, optimizer="adam",
                    lr=0.01, hidden_size=32), "the issue's horizon > distance case"),
    Entry("GRU on adding, T 50, Adam", RunConfig(cell="gru", task="adding", seq_len=50, steps=800,
                                                 optimizer="adam", lr=0.01, hidden_size=32), "adding task"),
    Entry("GRU on copy, Adam", RunConfig(cell="gru", task="copy", seq_len=10, steps=1500, optimizer="adam",
                                         lr=0.01), "copy task"),
    Entry("tanh RNN, 5 fillers, seed 1", NEAR.replace(seed=1), "seed"),
    Entry("tanh RNN, 10 fillers, seed 4", FAR.replace(seq_len=10, seed=4), "learns from 0.1 % at the start"),
    Entry("tanh RNN with Adam, seed 1", FAR.replace(optimizer="adam", lr=0.001, seed=1), "Adam"),
    Entry("IRNN, seed 1", FAR.replace(activation="relu", init="identity", lr=0.01, momentum=0.0, seed=1), "seed"),
    Entry("GRU, update bias 2, seed 3", FAR.replace(cell="gru", forget_bias=2.0, seed=3), "seed"),
    Entry("tanh RNN, orthogonal W_hh, seed 1", FAR.replace(init="orthogonal", seed=1), "a remedy, another seed"),
    # runs that do not learn although their gradient reaches the dependency: another cause than vanishing
    Entry("GRU, update bias 1", FAR.replace(cell="gru"), "the gradient reaches; the GRU learns slowly"),
    Entry("tanh RNN, 12 fillers, seed 1", FAR.replace(seq_len=12, seed=1), "the edge of what SGD learns"),
    Entry("LSTM, seed 1", FAR.replace(cell="lstm", seed=1), "lesson 4 at another seed"),
]
QUICK = ("linear RNN ×1.3, seed 1", "tanh RNN, 5 fillers, seed 1", "sigmoid RNN, 10 fillers")  # a few seconds


def corpus() -> list[Entry]:
    return _lesson_entries() + OTHER_ENTRIES


def _skill(value: float, reference: float, perfect: float) -> float:
    return (value - reference) / (perfect - reference) if np.isfinite(value) else -np.inf


def label(status: str, metric: float | None, data: rd.RunData, config: RunConfig) -> str:
    """What the run did: diverged, learned or did not learn (see the module docstring)."""
    task = task_of(config)
    dep = task.dependency()
    if status == "diverged" or (data.events["kind"] == rd.EVENT_NONFINITE).any():
        return DIVERGED
    loss = data.series(rd.LOSS).to_numpy(dtype=float)
    loss = loss[np.isfinite(loss)]
    window = max(5, len(loss) // 20)
    start, end = np.median(loss[:window]), np.median(loss[-window:])
    memoryless = task.baseline_loss
    if end >= LOSS_FAR * max(loss[0], memoryless) or (end >= LOSS_RISE * start and end >= LOSS_RISE * memoryless):
        return DIVERGED
    final = _skill(metric if metric is not None else np.nan, dep.reference, task.perfect)
    batch = data.series(rd.METRIC).rolling(window).median().to_numpy(dtype=float)
    once = np.nanmax([_skill(v, dep.reference, task.perfect) for v in batch[window - 1:]], initial=-np.inf)
    if once >= ONCE_LEARNED_SKILL and final < LEARNED_SKILL:
        return DIVERGED
    return LEARNED if final >= LEARNED_SKILL else DID_NOT_LEARN


def _train(config: RunConfig) -> dict:
    """One run trained and diagnosed, as plain data (in a worker process)."""
    import torch

    from diagnostics.train import finish_diagnosis, train
    torch.set_num_threads(1)
    started = time.perf_counter()
    summary, data = train(config)
    finish_diagnosis(summary, data, config)
    problems = [d for d in summary.diagnoses if d["severity"] == "problem"]
    return {"label": label(summary.status, summary.final_metric, data, config), "status": summary.status,
            "final_metric": summary.final_metric, "verdict": summary.verdict,
            "problems": sorted({d["kind"] for d in problems}), "rules": [d["rule"] for d in problems],
            "notes": [d["rule"] for d in summary.diagnoses if d["severity"] == "note"],
            "first_remedy": problems[0]["remedies"][0] if problems and problems[0]["remedies"] else None,
            "seconds": round(time.perf_counter() - started, 1)}


def _judge_entry(item: tuple[Entry, bool]) -> dict:
    entry, check_remedy = item
    row = {"name": entry.name, "why": entry.why, "config": entry.config.to_dict(), **_train(entry.config)}
    row["expected"] = sorted(EXPECTED[row["label"]])
    if row["label"] == DID_NOT_LEARN:  # not a label: whether it was stuck or slow, for reading the misses
        longer = entry.config.replace(steps=min(entry.config.steps * PATIENCE, field_map()["steps"].metadata["hi"]))
        row["learns_with_more_steps"] = _train(longer)["label"] == LEARNED
    remedy = row["first_remedy"]
    if check_remedy and remedy is not None:
        after = _train(entry.config.replace(**remedy["changes"]))
        row["remedy_result"] = {"changes": remedy["changes"], "label": after["label"],
                                "problems": after["problems"],
                                "problem_gone": not set(row["problems"]) & set(after["problems"]),
                                "cured": after["label"] == LEARNED and not after["problems"]}
    return row


def score(rows: list[dict]) -> dict:
    """Precision and recall of problem diagnoses per kind, with the runs that were wrong."""
    out = {}
    for kind in KINDS:
        tp = [r["name"] for r in rows if kind in r["problems"] and kind in r["expected"]]
        fp = [r["name"] for r in rows if kind in r["problems"] and kind not in r["expected"]]
        fn = [r["name"] for r in rows if kind not in r["problems"] and kind in r["expected"]]
        out[kind] = {"true": len(tp), "false": fp, "missed": fn,
                     "precision": len(tp) / (len(tp) + len(fp)) if tp or fp else None,
                     "recall": len(tp) / (len(tp) + len(fn)) if tp or fn else None}
    return out


def _sweep_run(item: tuple[str, int, RunConfig]) -> tuple[str, int, bool]:
    name, seed, config = item
    return name, seed, _train(config)["label"] == LEARNED


def remedy_sweep(pool, seeds=SWEEP_SEEDS) -> dict[str, list[int]]:
    """Each vanishing remedy offered to lesson 3's tanh RNN, trained at every seed: the seeds it cured."""
    remedies = remedies_for(FAR, *VANISHING_CURES)
    items = [(r.label, seed, FAR.replace(**r.changes, seed=seed)) for r in remedies for seed in seeds]
    cured: dict[str, list[int]] = {r.label: [] for r in remedies}
    for label, seed, learned in pool.map(_sweep_run, items, chunksize=1):
        if learned:
            cured[label].append(seed)
    return cured


def corpus_case(quick: bool) -> dict:
    """D1 for results.json: every entry's label and verdict, the score, how often the first remedy cured, and
    (not with --quick) how reliably each vanishing remedy cures lesson 3 across seeds."""
    entries = [e for e in corpus() if e.name in QUICK] if quick else corpus()
    items = [(entry, True) for entry in entries]
    with multiprocessing.get_context("spawn").Pool(len(os.sched_getaffinity(0))) as pool:
        rows = pool.map(_judge_entry, items, chunksize=1)
        sweep = {} if quick else remedy_sweep(pool)
    checked = [r for r in rows if "remedy_result" in r]
    scores = score(rows)
    met = all(s["precision"] in (None, 1.0) and s["recall"] in (None, 1.0) for s in scores.values())
    return {"what": "precision and recall of problem diagnoses per kind on a labelled corpus of real runs",
            "target": 1.0, "measured": time.strftime("%Y-%m-%d %H:%M"), "quick": quick, "met": met,
            "score": scores, "remedies": {"checked": len(checked),
                                          "problem_gone": sum(r["remedy_result"]["problem_gone"] for r in checked),
                                          "cured": sum(r["remedy_result"]["cured"] for r in checked)},
            "remedy_sweep": {"config": FAR.to_dict(), "seeds": list(SWEEP_SEEDS), "cured_seeds": sweep},
            "results": rows}


def table(case: dict) -> str:
    """Per entry: its label, the kinds of problem the verdict found; then precision and recall per kind."""
    lines = [f"{'run':48}  {'label':13}  {'problems':20}  first remedy"]
    for r in case["results"]:
        after = r.get("remedy_result")
        result = "-" if after is None else "cured" if after["cured"] else \
            f"problem gone, {after['label']}" if after["problem_gone"] else f"still {','.join(after['problems'])}"
        mark = "" if set(r["problems"]) == set(r["expected"]) else "  <-- miss"
        if "learns_with_more_steps" in r:
            mark += f"  ({PATIENCE}x steps: {'learns' if r['learns_with_more_steps'] else 'still not'})"
        lines.append(f"{r['name'][:48]:48}  {r['label']:13}  {','.join(r['problems']) or '-':20}  {result}{mark}")
    for kind, s in case["score"].items():
        p = "n/a" if s["precision"] is None else f"{s['precision']:.2f}"
        rc = "n/a" if s["recall"] is None else f"{s['recall']:.2f}"
        lines.append(f"D1 {kind:9}  precision {p}  recall {rc}  ({s['true']} found; false: {s['false'] or 'none'}; "
                     f"missed: {s['missed'] or 'none'})")
    rem = case["remedies"]
    lines.append(f"D1 first remedy of a problem run: removed its problem {rem['problem_gone']} of {rem['checked']}, "
                 f"cured it (learned, no problem left) {rem['cured']} of {rem['checked']}")
    for label, seeds in case.get("remedy_sweep", {}).get("cured_seeds", {}).items():
        lines.append(f"D1 lesson 3 + {label}: learned on {len(seeds)} of {len(case['remedy_sweep']['seeds'])} seeds "
                     f"{seeds}")
    return "\n".join(lines)
