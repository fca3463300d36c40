"""The gradient through time as numbers with a plain meaning: how fast ‖∂L/∂h_t‖ decays going back in time,
how far back it stays usable (the memory horizon), and how much of it reaches the input a task depends on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .tasks import Dependency

# Bengio et al. 1994: the gradient from step T back to step t shrinks exponentially in T - t. Below 1 % of its
# value at the loss, the gradient reaching an input is too small to learn from: on the diagnosis corpus every run
# that learned had at least this share reaching its dependency by its last recorded steps, and those that learned
# from less (lesson 4's LSTM starts at 0.5 %) raised it while they learned. It also defines the memory horizon.
VANISHED = 1e-2
# "Latest" means the median of the last few recorded profiles, so one unusual batch does not decide the verdict.
RECENT_PROFILES = 5
# Pascanu et al. 2013: ||dh_t/dh_{t-1}|| <= sigma_max(W_hh) * gamma, with gamma the bound on the activation's
# slope; sigma_max < 1/gamma therefore guarantees that gradients vanish.
GAMMA = {"tanh": 1.0, "sigmoid": 0.25, "relu": 1.0, "linear": 1.0}


@dataclass(frozen=True)
class TimeGradientFit:
    """How ||dL/dh_t|| decays going back in time, in numbers that have a plain meaning."""

    gain: float | None  # per-step factor going back one step (< 1: vanishing); None with < 2 positive entries
    horizon: float | None  # memory_horizon: steps back until below VANISHED of the value at T; None: no decay
    ratio: float | None  # profile[0] / profile[-1]; 0.0 when step 1 underflowed; None when step T is not > 0
    underflow_steps: int  # exact zeros: float32 underflow


def time_gradient_fit(profile: Sequence[float]) -> TimeGradientFit:
    """Fit log||dL/dh_t|| = c - t*ln(gain) by least squares, so one number says how fast gradients die."""
    p = np.asarray(profile, dtype=float)
    t = np.arange(1, len(p) + 1)
    positive = np.isfinite(p) & (p > 0)
    gain = None
    if positive.sum() >= 2:
        slope = np.polyfit(t[positive], np.log(p[positive]), 1)[0]
        gain = float(np.exp(-slope))
    ratio = float(p[0] / p[-1]) if len(p) and np.isfinite(p[0]) and np.isfinite(p[-1]) and p[-1] > 0 else None
    return TimeGradientFit(gain=gain, horizon=memory_horizon(p, gain), ratio=ratio,
                           underflow_steps=int((p == 0.0).sum()))


def memory_horizon(profile: Sequence[float], gain: float | None) -> float | None:
    """How many steps back from the last time step ||dL/dh_t|| still reaches VANISHED of its value there.

    Read off the profile itself: the farthest step still at or above the line, log-interpolated to the next one
    below, since gated cells do not decay geometrically (an LSTM's profile dips in the middle and rises again
    towards t = 1). A profile that stays above the line over the whole sequence is extrapolated with the fitted
    `gain` (None when it does not decay at all)."""
    p = np.asarray(profile, dtype=float)
    if not len(p) or not np.isfinite(p[-1]) or p[-1] <= 0:
        return None
    back = p[::-1] / p[-1]  # back[k]: k steps before the last
    above = np.flatnonzero(back >= VANISHED)  # NaN is never above: the gradient is lost there
    k = int(above[-1])
    if k + 1 < len(back):
        a, b = back[k], back[k + 1]
        if not (np.isfinite(b) and b > 0):
            return float(k)
        return float(k + (math.log(VANISHED) - math.log(a)) / (math.log(b) - math.log(a)))
    if gain is None or gain >= 1:
        return None
    return max(float(len(p) - 1), math.log(VANISHED) / math.log(gain))


def vanishing_bound(activation: str) -> float:
    """The 1/gamma line below which sigma_max(W_hh) guarantees vanishing gradients (Pascanu et al. 2013)."""
    return 1.0 / GAMMA[activation]


@dataclass(frozen=True)
class Reach:
    """How much of the gradient at the loss arrives at the input the task depends on, on layer 0."""

    step: int  # the latest recorded step judged
    ratio: float  # ||dL/dh_source|| / ||dL/dh_target||, median over the latest RECENT_PROFILES profiles
    first_step: int
    first_ratio: float  # the same at the first recorded step: the untrained network
    profile: tuple[float, ...]  # layer 0's profile at `step`
    fit: TimeGradientFit  # of `profile`


def gradient_reach(time_grads: pd.DataFrame, dep: Dependency) -> Reach | None:
    """The share of the loss-side gradient that reaches the task's dependency, at the latest and first steps.

    "Latest" is the median over the last RECENT_PROFILES usable profiles after the first recorded step, which
    shows the untrained network: a run too short to have one later is judged on that one alone."""
    tg = time_grads[(time_grads["layer"] == 0).fillna(False).astype(bool)]
    if tg.empty:
        return None
    # dropna=False: a profile that went NaN at every t is data (it is skipped below), not a column to drop.
    wide = tg.pivot_table(index="step", columns="t", values="value", aggfunc="first", dropna=False).sort_index()
    target = min(dep.target, int(tg["t"].max()))
    if dep.source not in wide.columns or target not in wide.columns:
        return None
    ends = pd.DataFrame({"finite": np.isfinite(wide.to_numpy(dtype=float)).all(axis=1),
                         "source": wide[dep.source], "target": wide[target]}, index=wide.index)
    return reach_of_ends(ends, lambda step: wide.loc[step, :target].to_numpy(dtype=float))


def usable_steps(ends: pd.DataFrame) -> pd.Series:
    """Which recorded steps can be judged: a profile finite at every t (the source included: a profile too short
    to reach it cannot be judged) whose loss-side gradient is positive."""
    return ends["finite"].astype(bool) & np.isfinite(ends["source"]) & (ends["target"] > 0)


def reach_of_ends(ends: pd.DataFrame, profile_at: Callable[[int], Sequence[float]]) -> Reach | None:
    """`gradient_reach` from one row per recorded step (index step; columns finite, source, target: the
    profile's values at the dependency's two ends) and the whole profile of the step judged, read on demand:
    the store computes these rows inside SQLite, so a long run's profiles are never all in memory."""
    ends = ends.sort_index()
    ratios = (ends["source"] / ends["target"])[usable_steps(ends)]
    if ratios.empty:
        return None
    step = int(ratios.index[-1])
    later = ratios.iloc[1:] if len(ratios) > 1 else ratios
    profile = tuple(float(v) for v in profile_at(step))
    return Reach(step=step, ratio=float(later.iloc[-RECENT_PROFILES:].median()), first_step=int(ratios.index[0]),
                 first_ratio=float(ratios.iloc[0]), profile=profile, fit=time_gradient_fit(profile))
