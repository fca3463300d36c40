"""What a run achieved, computed from its status, held-out metric and loss: the facts a verdict weighs."""

import math
import statistics

import pytest

from diagnostics import rundata as rd
from diagnostics.config import RunConfig
from diagnostics.model import task_of
from diagnostics.outcome import CLEARLY_BEATEN, outcome_of
from diagnostics.rundata import RunData


def losses(values):
    return RunData(metrics=rd.frame([(s, rd.LOSS, None, "", v) for s, v in enumerate(values, start=1)],
                                    rd.METRIC_COLUMNS))


AGREEMENT, ADDING, COPY = (task_of(RunConfig(task=t, seq_len=10)) for t in ("agreement", "adding", "copy"))


@pytest.mark.parametrize("task, metric, skill", [
    (AGREEMENT, 0.5, 0.0), (AGREEMENT, 0.6, 0.2), (AGREEMENT, 1.0, 1.0), (AGREEMENT, 0.4, -0.2),
    (ADDING, 1 / 12, 0.0), (ADDING, 1 / 24, 0.5), (ADDING, 0.0, 1.0), (ADDING, 1 / 6, -1.0),
    (COPY, 1 / 8, 0.0), (COPY, 1.0, 1.0),
], ids=["chance", "60-percent", "perfect", "below-chance", "adding-keeps-only-the-2nd", "adding-half", "adding-0",
        "adding-memoryless", "copy-guess", "copy-perfect"])
def test_skill_is_the_share_of_the_gap_from_the_no_dependency_score_to_perfect(task, metric, skill):
    outcome = outcome_of("completed", metric, losses([1.0] * 10), task)
    assert outcome.skill == pytest.approx(skill)
    assert outcome.beaten == (skill >= CLEARLY_BEATEN - 1e-12)  # 0.6 is on the line, and counts


@pytest.mark.parametrize("metric", [None, math.nan, math.inf])
def test_a_missing_or_non_finite_metric_is_not_learning(metric):
    outcome = outcome_of("completed", metric, losses([1.0] * 10), AGREEMENT)
    assert outcome.skill is None and not outcome.beaten
    assert outcome.metric_text() == "held-out accuracy not finite, against 50 % without the subject"


def test_a_diverged_run_never_counts_as_learned():
    assert not outcome_of("diverged", 1.0, losses([1.0] * 10), AGREEMENT).beaten


def test_loss_course_of_a_long_run_takes_medians_of_five_percent_windows():
    values = [2.0] * 20 + [0.1 * (s % 3 + 1) for s in range(360)] + [5.0] * 20  # 400 steps: windows of 20
    course = outcome_of("completed", 0.5, losses(values), AGREEMENT).loss
    assert (course.first, course.start, course.end) == (2.0, 2.0, 5.0)
    assert course.best == pytest.approx(0.2) and course.baseline == pytest.approx(math.log(2))
    assert course.worst_expected == 2.0


@pytest.mark.parametrize("values", [[0.7], [0.7, 0.6, 0.5], [0.7, math.nan, 0.5, math.inf]])
def test_loss_course_of_a_run_of_a_few_steps_uses_what_there_is(values):
    """Fewer steps than a window: start and end are the median of every finite loss, the first is step 1's."""
    course = outcome_of("stopped", 0.5, losses(values), AGREEMENT).loss
    finite = [v for v in values if math.isfinite(v)]
    assert course.first == finite[0]
    assert course.start == course.end == pytest.approx(statistics.median(finite))
    assert course.best <= course.start


def test_no_finite_loss_means_no_course():
    assert outcome_of("diverged", None, losses([math.nan, math.inf]), AGREEMENT).loss is None
