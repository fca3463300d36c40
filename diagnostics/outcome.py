"""What a run achieved, apart from how its gradients looked: the facts a verdict weighs each signal against.

A gradient signal (a norm above 1, a vanished ‖∂L/∂h_t‖) is a problem only when the run was harmed by it, so
the diagnosis needs the run's outcome: its status, its held-out metric against the score of a model that
ignores the task's long-range dependency, and the course of its training loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import rundata as rd
from .rundata import RunData
from .tasks import Dependency, Task

# A run clearly beats the score it would get without the dependency when it closes at least this share of the gap
# from that score to a perfect one. On agreement that is 60 % held-out accuracy: 4.5 standard deviations above a
# guessing model on the 512 held-out sentences (2.2 %), the lessons' line between "forgot" and chance noise.
CLEARLY_BEATEN = 0.2
# The loss at the start and end is a median over this share of the steps (at least MIN_LOSS_WINDOW), so one
# unlucky batch neither makes nor breaks a run. The best is the lowest median of MIN_LOSS_WINDOW consecutive steps:
# a model that learned for twenty steps and then lost it to one gradient spike did learn (seen on a 2-layer LSTM
# whose loss fell to 0.02 for 15 steps, within a 40-step window whose median stayed at 0.64).
LOSS_WINDOW_SHARE = 0.05
MIN_LOSS_WINDOW = 5


@dataclass(frozen=True)
class LossCourse:
    """The training loss at the first step, at the start, at its best and at the end (window medians)."""

    first: float  # of the untrained model, at step 1
    start: float
    best: float
    best_step: int  # the last step of the window where the loss was lowest
    end: float
    baseline: float  # the loss of a memoryless model (the task's baseline_loss): the unit of the loss rules

    def relative(self, value: float) -> float:
        """A loss in units of the memoryless model's loss (1.0: no better than ignoring the input)."""
        return value / self.baseline

    @property
    def worst_expected(self) -> float:
        """The larger of the untrained model's loss and a memoryless model's: training should end below both
        (the copy task's untrained loss is several times its memoryless one, which predicts blanks perfectly)."""
        return max(self.first, self.baseline)


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its status, held-out metric and loss course, judged against its task."""

    status: str
    metric: float | None  # held-out, on the task's fixed evaluation batch
    metric_name: str
    higher_is_better: bool
    perfect: float
    dependency: Dependency
    loss: LossCourse | None  # None when no finite loss was recorded

    @property
    def skill(self) -> float | None:
        """Share of the gap from the no-dependency score to a perfect one that the run closed (1: perfect)."""
        if self.metric is None or not math.isfinite(self.metric):
            return None
        return (self.metric - self.dependency.reference) / (self.perfect - self.dependency.reference)

    @property
    def beaten(self) -> bool:
        """Whether the run clearly beat a model that ignores the long-range dependency (it learned)."""
        # 60 % accuracy lies exactly on the line: float subtraction (0.6 - 0.5 = 0.0999…) must not move it off.
        return self.status != "diverged" and (self.skill or 0.0) >= CLEARLY_BEATEN - 1e-12

    def metric_text(self) -> str:
        """"held-out accuracy 50 %, against 50 % without the subject", for messages."""
        value, reference = (metric_value(self.metric_name, x) for x in (self.metric, self.dependency.reference))
        return f"held-out {self.metric_name} {value}, against {reference} without {self.dependency.source_name}"


def metric_value(name: str, value: float | None) -> str:
    """A task metric as messages show it: accuracy in whole percent, an MSE to three digits."""
    if value is None or not math.isfinite(value):
        return "not finite"
    return f"{value * 100:.0f} %" if name == "accuracy" else f"{value:.3g}"


def loss_course(data: RunData, baseline_loss: float) -> LossCourse | None:
    """Start, best and end of the finite training loss, each a median over a window of steps."""
    return loss_course_of(data.series(rd.LOSS), baseline_loss)


def loss_course_of(loss: pd.Series, baseline_loss: float | None) -> LossCourse | None:
    """`loss_course` of a loss series indexed by step; `baseline_loss` None: the loss at step 1 is the unit (a
    watched model has no memoryless baseline)."""
    loss = loss[np.isfinite(loss.to_numpy(dtype=float))]
    if loss.empty:
        return None
    window = max(MIN_LOSS_WINDOW, int(len(loss) * LOSS_WINDOW_SHARE))
    rolling = loss.rolling(MIN_LOSS_WINDOW, min_periods=1).median()
    settled = rolling.iloc[min(MIN_LOSS_WINDOW, len(rolling)) - 1:]  # windows that are full (or the whole run)
    return LossCourse(first=float(loss.iloc[0]), start=float(loss.iloc[:window].median()), best=float(settled.min()),
                      best_step=int(settled.idxmin()), end=float(loss.iloc[-window:].median()),
                      baseline=float(loss.iloc[0]) if baseline_loss is None else baseline_loss)


def outcome_of(status: str, metric: float | None, data: RunData, task: Task) -> Outcome:
    """The outcome of a finished run of `task` whose held-out metric is `metric`."""
    return Outcome(status=status, metric=metric, metric_name=task.metric_name,
                   higher_is_better=task.higher_is_better, perfect=task.perfect, dependency=task.dependency(),
                   loss=loss_course(data, task.baseline_loss))

