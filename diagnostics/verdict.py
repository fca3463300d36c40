"""A finished run's verdict: its outcome, the diagnoses of its recording with remedies fitted to the lessons,
and the one sentence that says first whether anything harmed it."""

from __future__ import annotations

from .config import RunConfig
from .diagnosis import EXPLODING, PROBLEM, VANISHING, Diagnosis, diagnose, explosion_harm, fraction_of
from .gradflow import VANISHED, gradient_reach
from .lessons import fit_remedies
from .model import task_of
from .outcome import Outcome, outcome_of
from .rundata import RunData
from .summary import RunSummary


def outcome_for(summary: RunSummary, data: RunData, config: RunConfig) -> Outcome:
    """What the run achieved: its status, held-out metric and loss course."""
    return outcome_of(summary.status, summary.final_metric, data, task_of(config))


def verdict(summary: RunSummary, data: RunData, config: RunConfig) -> list[Diagnosis]:
    """The run's diagnoses, problems first; remedies never lead to a config a lesson shows failing."""
    found = diagnose(data, config, outcome_for(summary, data, config))
    return [d if not d.remedies else Diagnosis(d.kind, d.rule, d.message, d.evidence,
                                               fit_remedies(config, d.remedies), d.severity)
            for d in found]


def headline(diagnoses: list[Diagnosis], data: RunData, config: RunConfig, outcome: Outcome) -> str:
    """One sentence, shown first: the problems by kind, or that there is none and how the run did."""
    problems = [d for d in diagnoses if d.severity == PROBLEM]
    notes = len(diagnoses) - len(problems)
    noted = f"; {notes} note{'s' * (notes != 1)}" if notes else ""
    dep = outcome.dependency
    if problems:
        reasons = {EXPLODING: explosion_harm(data, config, outcome),
                   VANISHING: f"the gradient does not reach {dep.source_name} and the model did not learn"}
        kinds = list(dict.fromkeys(d.kind for d in problems))
        what = " and ".join(f"{kind} gradients" for kind in kinds)
        return f"Problem: {what} ({'; '.join(reasons[kind] for kind in kinds)}){noted}."
    if outcome.beaten:
        return f"No problem: the model learned ({outcome.metric_text()}){noted}."
    reach = gradient_reach(data.time_grads, dep)
    reaches = (f", although the gradient reaching {dep.source_name} is "
               f"{fraction_of(reach.ratio, 'the one at ' + dep.target_name)}"
               if reach is not None and reach.ratio >= VANISHED else "")
    return (f"No exploding or vanishing problem, but the model did not clearly learn ({outcome.metric_text()})"
            f"{reaches}: more steps or another learning rate may help{noted}.")


def finish_diagnosis(summary: RunSummary, data: RunData, config: RunConfig) -> None:
    """Attach the verdict of the recorded data to the summary: its diagnoses and its headline."""
    found, outcome = verdict(summary, data, config), outcome_for(summary, data, config)
    summary.diagnoses = [d.to_dict() for d in found]
    summary.verdict = headline(found, data, config, outcome)
    summary.learned = outcome.beaten
