"""A finished run's verdict: its outcome, the diagnoses of its recording with remedies fitted to the runs whose
outcome the lessons show, and the one sentence (the headline) that says first whether anything harmed it."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .config import RunConfig
from .description import ModelDescription, stored_description
from .diagnosis import (DIAGNOSED_METRICS, EXPLODING, FROM_DATA, PROBLEM, VANISHING, Diagnosis,
                        Judgement, diagnose_judged, fraction_of, judge)
from .gradflow import VANISHED, Reach, reach_of_ends
from .lessons import known_outcomes
from .model import task_of
from .outcome import outcome_of
from .remedies import fit_to_known_runs
from .rundata import TIME_GRAD_COLUMNS, RunData, frame
from .store import Store
from .summary import RunSummary


@dataclass(frozen=True)
class Verdict:
    judgement: Judgement
    diagnoses: list[Diagnosis]  # problems first, then notes
    headline: str


def verdict_of(summary: RunSummary, data: RunData, config: RunConfig, reach: Reach | None | object = FROM_DATA,
               model: ModelDescription | None = None) -> Verdict:
    """Judge the run once, diagnose it, fit the remedies to the lessons and say it in one sentence; `model` is
    the run's stored description (by default the one its config builds)."""
    j = judge(data, config, outcome_of(summary.status, summary.final_metric, data, task_of(config)), reach, model)
    cures, failures = known_outcomes()
    found = [d if not d.remedies else Diagnosis(d.kind, d.rule, d.message, d.evidence,
                                                fit_to_known_runs(config, d.remedies, cures, failures), d.severity)
             for d in diagnose_judged(j)]
    return Verdict(j, found, headline(found, j))


def headline(diagnoses: list[Diagnosis], j: Judgement) -> str:
    """The problems by kind, or that there is none and how the run did."""
    problems = [d for d in diagnoses if d.severity == PROBLEM]
    notes = len(diagnoses) - len(problems)
    noted = f"; {notes} note{'s' * (notes != 1)}" if notes else ""
    outcome, dep, reach = j.outcome, j.dependency, j.reach
    if problems:
        reasons = {EXPLODING: j.explosion,
                   VANISHING: f"the gradient does not reach {dep.source_name} and the model did not learn"}
        kinds = list(dict.fromkeys(d.kind for d in problems))
        what = " and ".join(f"{kind} gradients" for kind in kinds)
        return f"Problem: {what} ({'; '.join(reasons[kind] for kind in kinds)}){noted}."
    if outcome.beaten:
        return f"No problem: the model learned ({outcome.metric_text()}){noted}."
    if outcome.status == "stopped":
        return (f"No exploding problem; the run was stopped before the model learned ({outcome.metric_text()}), "
                f"too early to call its gradient through time a problem{noted}.")
    if reach is None:
        why = ("no gradient through time was recorded (record_every = 0)" if j.data.time_grads.empty
               else "every recorded gradient through time was non-finite or zero at the loss")
        return (f"No exploding problem, but the model did not clearly learn ({outcome.metric_text()}), and vanishing "
                f"gradients cannot be judged: {why}{noted}.")
    reaches = (f", although the gradient reaching {dep.source_name} is "
               f"{fraction_of(reach.ratio, 'the one at ' + dep.target_name)}" if reach.ratio >= VANISHED else "")
    return (f"No exploding or vanishing problem, but the model did not clearly learn ({outcome.metric_text()})"
            f"{reaches}: more steps or another learning rate may help{noted}.")


def stored_verdict(summary: RunSummary, store: Store, run_id: int, config: RunConfig) -> Verdict:
    """`verdict_of` a stored run, reading only what the rules use: a few metric rows per step, one row per
    recorded profile (its two ends, summed up inside SQLite), the profile judged and the last gates. Memory
    then grows with the run's steps by a few rows each, not with its steps × time steps × layers."""
    info = store.get_run(run_id)
    model = stored_description(info.description, info.config)
    data = store.load_for_diagnosis(run_id, DIAGNOSED_METRICS, model.recurrent.weight_hh_prefix)
    dep = task_of(config).dependency()
    found = store.time_grad_ends(run_id, dep.source, dep.target)
    reach = None
    if found is not None:
        ends, target = found
        profile = functools.cache(lambda step: store.time_grad_profile(run_id, step))  # the judged step, read once
        reach = reach_of_ends(ends, lambda step: profile(step)[:target])
        judged = reach.step if reach is not None else int(ends.index[0])
        data.time_grads = frame([(judged, 0, t, v) for t, v in enumerate(profile(judged), 1)], TIME_GRAD_COLUMNS)
    return verdict_of(summary, data, config, reach, model)


def finish_diagnosis(summary: RunSummary, data: RunData | Verdict, config: RunConfig) -> None:
    """Attach the verdict of the recorded data (or a verdict already made) to the summary: its diagnoses,
    headline and outcome."""
    v = data if isinstance(data, Verdict) else verdict_of(summary, data, config)
    summary.diagnoses = [d.to_dict() for d in v.diagnoses]
    summary.verdict = v.headline
    summary.learned = v.judgement.outcome.beaten
