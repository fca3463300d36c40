"""Rules that read one run's recording and say, in plain words, whether its gradients exploded or vanished, and
whether that harmed the run.

A gradient signal alone is not a verdict: clipping caps spikes and the loss keeps falling, an LSTM's gradient
vanishes at initialisation and recovers, Adam learns from a vanished gradient. So `diagnose` first judges the
run once (`Judgement`): did exploding gradients harm it (a value went non-finite, the loss ran away or jumped
back up and stayed, the weights grew without bound while it did not learn), and did a run that did not learn
lose the gradient before it reached the input its task depends on? Each ``check_*`` rule then reports its own
signal with ``severity`` "problem" when the run was harmed by a signal of that kind and "note" otherwise.
Only problems carry remedies, each a concrete `RunConfig` change. Thresholds are module constants, so charts
and lessons can draw and cite them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import rundata as rd
from .config import RunConfig
from .description import ModelDescription, RecurrentModule, describe
from .gradflow import GAMMA, VANISHED, Reach, gradient_reach, vanishing_bound
from .outcome import Outcome
from .remedies import (SATURATION_CURES, SPECTRAL_CURES, VANISHING_CURES, WEIGHT_GROWTH_CURES, Builder, Remedy,
                       explosion_cures, remedies_for)
from .rundata import RunData
from .tasks import Dependency

PROBLEM, NOTE = "problem", "note"
EXPLODING, VANISHING = "exploding", "vanishing"

# --- exploding ------------------------------------------------------------------------------------------
# Learning moves a layer's recurrent weights by a few percent over tens of steps; more than doubling within 50
# steps is the exponential growth that lets ||W_hh|| pass the explosion bound (Pascanu et al. 2013).
WEIGHT_GROWTH_FACTOR = 2.0
WEIGHT_GROWTH_WINDOW = 50
# A growth of ||W_hh|| over the whole run that a reader sees on the weight chart (lesson 8's unpenalised RNN:
# 1.6x while it learns); on a run that learned it is worth a note, never a problem.
WEIGHT_GREW = 1.5
# The gradient-norm line the dashboard draws (and the default clipping threshold): a healthy layer's norm
# dips below it as the loss settles; staying above it on every layer means steps are always large.
GRAD_LIMIT = 1.0
GRAD_PATIENCE = 20  # consecutive steps above GRAD_LIMIT before it is a pattern, not a bad batch
# Pascanu et al. 2013: exploding gradients show up as sudden jumps of the norm at "cliffs" of the loss surface.
# A jump counts when it reaches 10x both the median of the preceding 20 steps (far outside batch noise) and the
# clipping threshold (GRAD_LIMIT without norm clipping): a converged model's median of 1e-9 must not turn an
# ordinary gradient of 0.1 into a "spike".
SPIKE_FACTOR = 10.0
SPIKE_WINDOW = 20
# Losses are judged in units of a memoryless model's loss (the task's baseline_loss). A run whose loss ends at
# least half of that above its best lost what it had learned: a converging run's end window moves by a few
# hundredths of it (measured on the corpus of bench/diagnosis.py).
LOSS_SETBACK = 0.5
# A loss ending ten times above both the untrained model's (step 1) and a memoryless model's means confidently wrong
# answers: outputs blown up by runaway weights.
LOSS_FAR = 10.0

# --- vanishing ------------------------------------------------------------------------------------------
# Saturated units (tanh |h| > 0.99, sigmoid near 0/1, dead ReLU) have slope ~0 and pass almost no gradient;
# once they are the majority of a layer, most paths back in time are cut.
SATURATION_LIMIT = 0.5
# Share of a sigmoid gate's entries below 0.1 or above 0.9 (as the recorder counts them), averaged over t.
GATE_SATURATION_LIMIT = 0.5
# Gates whose activations are sigmoids; the tanh candidate has no 0/1 saturation in the recorder's sense.
SIGMOID_GATES = {"rnn": (), "lstm": ("input", "forget", "output"), "gru": ("reset", "update")}
# Gates that keep the memory when near 1 (LSTM forget: c_t = f*c_{t-1} + ..., GRU update: h_t = z*h_{t-1}
# + ...): near 1 is the memory working (Jozefowicz et al. 2015), so only their share near 0 counts.
MEMORY_GATES = {"lstm": "forget", "gru": "update"}


@dataclass(frozen=True)
class Diagnosis:
    """One rule that fired, with the numbers a student can check on the charts."""

    kind: str  # EXPLODING | VANISHING
    rule: str
    message: str
    evidence: dict  # JSON-safe: non-finite numbers are None
    remedies: tuple[Remedy, ...]
    severity: str = PROBLEM  # PROBLEM: the signal harmed this run; NOTE: it was there, but did no harm

    def to_dict(self) -> dict:
        """Plain data for the store, the CLI and share links."""
        return {"kind": self.kind, "rule": self.rule, "severity": self.severity, "message": self.message,
                "evidence": self.evidence,
                "remedies": [{"label": r.label, "changes": dict(r.changes), **({"code": r.code} if r.code else {})}
                             for r in self.remedies]}


# What the rules read of a run's metrics: aggregates (tensor "") and the recurrent matrices' rows of these names.
DIAGNOSED_METRICS = (rd.LOSS, rd.GRAD_NORM_PRE_CLIP, rd.GRAD_NORM, rd.WEIGHT_NORM, rd.SIGMA_MAX, rd.HIDDEN_SATURATION)
FROM_DATA = object()  # judge's default: the reach is computed from the data's own time_grads


# --- what the run suffered: computed once, read by every rule --------------------------------------------
@dataclass(frozen=True)
class Judgement:
    """One run as the rules see it: its recording, config and outcome, and how its gradients harmed it."""

    data: RunData
    config: RunConfig  # what remedies change
    model: ModelDescription  # what the rules read about the model: its cell, layers, activation, clipping
    outcome: Outcome
    reach: Reach | None  # None without a recorded profile whose loss-side gradient is positive
    explosion: str | None  # how exploding gradients harmed the run, in words; None: they did not

    @property
    def vanishing_harm(self) -> bool:
        """A run that did not learn, whose gradient fell below VANISHED before reaching its dependency, and
        that no explosion explains (saturated units after an explosion cut the gradient as a consequence). A run
        stopped by hand is not judged: an LSTM's gradient vanishes at first and recovers as its forget gate
        learns, which a stopped run may not have had the steps to show."""
        return (self.reach is not None and self.reach.ratio < VANISHED and not self.outcome.beaten
                and self.explosion is None and self.outcome.status != "stopped")

    def severity(self, kind: str) -> str:
        harmed = self.explosion is not None if kind == EXPLODING else self.vanishing_harm
        return PROBLEM if harmed else NOTE

    @property
    def dependency(self) -> Dependency:
        return self.outcome.dependency


def _nonfinite(data: RunData) -> pd.DataFrame:
    events = data.events
    return events[events["kind"] == rd.EVENT_NONFINITE].sort_values("step", kind="stable")


def _recurrent(data: RunData, module: RecurrentModule, layer: int) -> pd.Series:
    """||W_hh|| of one layer, finite and positive values only."""
    s = _finite(data.series(rd.WEIGHT_NORM, layer, tensor=module.weight_hh(layer)))
    return s[s > 0]


def _fast_growth(data: RunData, model: ModelDescription) -> tuple[int, int, int, float, float] | None:
    """(end_step, layer, start_step, start_value, end_value) of the earliest doubling of ||W_hh|| within
    WEIGHT_GROWTH_WINDOW steps, over all layers."""
    found = []
    for layer in range(model.recurrent.num_layers):
        s = _recurrent(data, model.recurrent, layer)
        low = s.rolling(WEIGHT_GROWTH_WINDOW, min_periods=1).min()
        hits = np.flatnonzero(s.to_numpy() > WEIGHT_GROWTH_FACTOR * low.to_numpy())
        if hits.size:
            j = int(hits[0])
            window = s.iloc[max(0, j - WEIGHT_GROWTH_WINDOW + 1):j + 1]
            start = window[window == window.min()].index[-1]  # the latest low point: the tightest range
            found.append((int(s.index[j]), layer, int(start), float(window[start]), float(s.iloc[j])))
    return min(found) if found else None


def _setback(data: RunData, outcome: Outcome) -> tuple[int, float] | None:
    """(step, value) of the largest pre-clip gradient norm after the loss's best point, when the loss ended
    LOSS_SETBACK above its best and that norm passed GRAD_LIMIT: large gradients threw away what was learned."""
    loss = outcome.loss
    if loss is None or loss.relative(loss.end - loss.best) < LOSS_SETBACK:
        return None
    pre = _finite(data.series(rd.GRAD_NORM_PRE_CLIP))
    after = pre[pre.index >= loss.best_step]
    if after.empty or after.max() <= GRAD_LIMIT:
        return None
    return int(after.idxmax()), float(after.max())


def _past_explosion_bound(data: RunData, model: ModelDescription) -> bool:
    """Whether growing weights can explode the gradient: for a vanilla RNN once sigma_max(W_hh) passes 1/gamma
    (Pascanu et al. 2013); doubling small weights that stay below it cannot. Gated cells have no such bound."""
    module = model.recurrent
    if module.cell != "rnn":
        return True
    latest = [s.iloc[-1] for layer in range(module.num_layers)
              if len(s := _finite(data.series(rd.SIGMA_MAX, layer, tensor=module.weight_hh(layer))))]
    return not latest or max(latest) >= vanishing_bound(module.activation)


def explosion_harm(data: RunData, model: ModelDescription, outcome: Outcome) -> str | None:
    """How exploding gradients harmed the run, or None when they did not."""
    if not _nonfinite(data).empty:
        return "a value went non-finite"
    loss = outcome.loss
    if loss is not None and loss.end >= LOSS_FAR * loss.worst_expected:
        return "the loss ran away"
    if _setback(data, outcome) is not None:
        return "the loss jumped back up and did not recover"
    if _fast_growth(data, model) is not None and not outcome.beaten and _past_explosion_bound(data, model):
        return "the weights grew without bound while the model did not learn"
    return None


def judge(data: RunData, config: RunConfig, outcome: Outcome, reach: Reach | None | object = FROM_DATA,
          model: ModelDescription | None = None) -> Judgement:
    """The run as every rule reads it: the gradient's reach and the explosion's harm, computed once. A `reach`
    computed elsewhere (from the store, without loading every profile) replaces the one of `data.time_grads`;
    `model` is the run's stored description (by default the one its config builds)."""
    if reach is FROM_DATA:
        reach = gradient_reach(data.time_grads, outcome.dependency)
    model = model or describe(config)
    return Judgement(data=data, config=config, model=model, outcome=outcome, reach=reach,
                     explosion=explosion_harm(data, model, outcome))


def _cures(j: Judgement, kind: str, *builders: Builder) -> tuple[Remedy, ...]:
    """Remedies for a problem only: a note describes what did no harm, so there is nothing to undo."""
    return remedies_for(j.config, *builders) if j.severity(kind) == PROBLEM else ()


# --- helpers --------------------------------------------------------------------------------------------
def _num(x) -> float | None:
    """A JSON-safe float: NaN and ±Inf become None."""
    return float(x) if x is not None and math.isfinite(x) else None


def _int(x) -> int | None:
    return None if pd.isna(x) else int(x)


def _finite(s: pd.Series) -> pd.Series:
    return s[np.isfinite(s.to_numpy(dtype=float))]


def share_text(x: float) -> str:
    """A share of the gradient in words a student reads: "0.038 %", "4.5 %", "exactly 0 (float32 underflow)"."""
    return "exactly 0 (float32 underflow)" if x == 0 else f"{x:.2g}" if x < 1e-4 else f"{x * 100:.2g} %"


def fraction_of(x: float, of: str) -> str:
    """"0.038 % of the one at the verb", or "3.2 times the one at the verb" when it grew going back."""
    return f"{share_text(x)} of {of}" if x < 1 else f"{x:.2g} times {of}"


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """Start index and length of the longest run of True (the earliest one on a tie)."""
    edges = np.diff(np.concatenate(([0], mask.astype(int), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not starts.size:
        return 0, 0
    i = int(np.argmax(ends - starts))
    return int(starts[i]), int(ends[i] - starts[i])


def _describe_event(event: pd.Series) -> str:
    tensor, layer, t = event["tensor"], _int(event["layer"]), _int(event["time_step"])
    if tensor == "loss":
        return "the loss"
    if tensor == "hidden":
        where = "" if t is None else f" at time step {t}"
        return f"the hidden state of layer {layer}{where}"
    if tensor == "grad:hidden":
        where = "" if t is None else f" at time step {t}"
        return f"the gradient of the hidden state of layer {layer}{where}"
    if tensor.startswith("grad:"):
        return f"the gradient of {tensor.removeprefix('grad:')}"
    if tensor.startswith("grad_norm"):
        of = tensor.removeprefix("grad_norm").removeprefix(":") or "all parameters"
        return f"the gradient norm of {of} (finite entries whose squares overflowed float32)"
    if tensor == "penalty":
        return "the L2 penalty (finite weights whose squares overflowed float32)"
    return f"the weights {tensor}"


def _no_harm(j: Judgement) -> str:
    """Why an exploding signal is only a note: what the run did instead of blowing up."""
    if j.outcome.beaten:
        return f"while the model learned ({j.outcome.metric_text()})"
    return "but the loss neither ran away nor jumped back up"


def _after_vanishing(j: Judgement) -> str:
    """Why a vanishing signal is only a note."""
    if j.explosion is not None:
        return f"a consequence of the explosion ({j.explosion}), not its cause"
    if j.outcome.beaten:
        return f"yet the model learned ({j.outcome.metric_text()})"
    if j.outcome.status == "stopped":
        return "but the run was stopped before it could show whether the gradient recovers"
    if j.reach is not None:
        return (f"yet the gradient reaching {j.dependency.source_name} is still "
                f"{fraction_of(j.reach.ratio, 'the one at ' + j.dependency.target_name)}")
    return "with no recorded gradient through time to judge its effect"


# --- exploding rules ------------------------------------------------------------------------------------
def check_nonfinite(j: Judgement) -> Diagnosis | None:
    """A NaN or Inf anywhere is the end point of an explosion, so the first one is the thing to look at."""
    bad = _nonfinite(j.data)
    if bad.empty:
        return None
    first = bad.iloc[0]
    counts = {"nan": int(first["nan"]), "posinf": int(first["posinf"]), "neginf": int(first["neginf"])}
    held = ", ".join(f"{n} {label}" for n, label in zip(counts.values(), ("NaN", "+Inf", "-Inf")) if n)
    message = (f"The numbers overflowed: at step {int(first['step'])} {_describe_event(first)} became "
               f"non-finite ({held + '; ' if held else ''}{len(bad)} non-finite "
               f"event{'s' * (len(bad) != 1)} in total).")
    evidence = {"step": int(first["step"]), "tensor": str(first["tensor"]), "layer": _int(first["layer"]),
                "time_step": _int(first["time_step"]), **counts, "count": len(bad)}
    at_init = int(first["step"]) == 1 and first["tensor"] in ("hidden", "loss")  # before any update
    if at_init:
        message += " The untrained model overflowed at its first forward pass: the initial weights are too large."
    return Diagnosis(EXPLODING, "nonfinite", message, evidence,
                     _cures(j, EXPLODING, *explosion_cures(j.config, at_initialisation=at_init)), PROBLEM)


def check_loss_divergence(j: Judgement) -> Diagnosis | None:
    """The loss ran away, or rose back to where it started and stayed there: the harm explosions do."""
    loss = j.outcome.loss
    if loss is None or not _nonfinite(j.data).empty:  # a non-finite run is told by its first NaN/Inf
        return None
    far = loss.end >= LOSS_FAR * loss.worst_expected
    setback = _setback(j.data, j.outcome)
    if not far and setback is None:
        return None
    if setback is not None:
        step, norm = setback
    else:
        pre = _finite(j.data.series(rd.GRAD_NORM_PRE_CLIP))
        step, norm = (int(pre.idxmax()), float(pre.max())) if len(pre) else (None, None)
    if far:
        message = (f"The training loss ended at {loss.end:.3g}, {loss.end / loss.worst_expected:.3g}x what the "
                   f"untrained model scored at step 1 ({loss.first:.3g}) or a model that ignores its input scores "
                   f"({loss.baseline:.3g}): the updates threw the weights far from any solution")
    else:
        message = (f"The training loss fell to {loss.best:.3g} by step {loss.best_step}, then rose back to "
                   f"{loss.end:.3g} by the end (a model that ignores its input scores {loss.baseline:.3g}): the "
                   "model lost what it had learned")
    if norm is not None:
        message += f" (the gradient norm reached {norm:.3g} at step {step})"
    evidence = {"first": loss.first, "start": loss.start, "best": loss.best, "best_step": loss.best_step,
                "end": loss.end,
                "baseline_loss": loss.baseline, "grad_norm_step": step, "grad_norm": _num(norm),
                "setback": LOSS_SETBACK, "far": LOSS_FAR}
    return Diagnosis(EXPLODING, "loss_divergence", message + ".", evidence,
                     _cures(j, EXPLODING, *explosion_cures(j.config)), PROBLEM)


def check_weight_growth(j: Judgement) -> Diagnosis | None:
    """Weights that grow exponentially push sigma_max(W_hh) past the point where gradients explode; weights
    that grew steadily while the model learned are the learning, which a note names."""
    fast = _fast_growth(j.data, j.model)
    if fast is not None:
        end, layer, start, a, b = fast
        steps = f"{end - start} step{'s' * (end - start != 1)}"
        growth = (f"The recurrent weights of layer {layer} grew {b / a:.3g}x in {steps} (‖W_hh‖ {a:.3g} at step "
                  f"{start}, {b:.3g} at step {end})")
        severity = j.severity(EXPLODING)
        tail = ("weights growing this fast make the gradients explode" if severity == PROBLEM
                else f"fast, {_no_harm(j)}")
        evidence = {"layer": layer, "start_step": start, "end_step": end, "start_value": a, "end_value": b,
                    "factor": b / a, "growth": "fast"}
        return Diagnosis(EXPLODING, "weight_growth", f"{growth}: {tail}.", evidence,
                         _cures(j, EXPLODING, *WEIGHT_GROWTH_CURES), severity)
    if not j.outcome.beaten or j.explosion is not None:
        return None
    grown = []  # (factor, layer, start_step, start, end_step, end)
    for layer in range(j.model.recurrent.num_layers):
        s = _recurrent(j.data, j.model.recurrent, layer)
        if len(s) >= 2 and s.iloc[-1] >= WEIGHT_GREW * s.iloc[0]:
            grown.append((float(s.iloc[-1] / s.iloc[0]), layer, int(s.index[0]), float(s.iloc[0]),
                          int(s.index[-1]), float(s.iloc[-1])))
    if not grown:
        return None
    factor, layer, s0, a, s1, b = max(grown)
    message = (f"The recurrent weights of layer {layer} grew {factor:.2g}x over the run (‖W_hh‖ {a:.3g} at step "
               f"{s0}, {b:.3g} at step {s1}) {_no_harm(j)}: carrying {j.dependency.source_name} across time "
               "needed larger weights, and no gradient exploded.")
    evidence = {"layer": layer, "start_step": s0, "end_step": s1, "start_value": a, "end_value": b,
                "factor": factor, "growth": "gradual"}
    return Diagnosis(EXPLODING, "weight_growth", message, evidence, (), NOTE)


def check_grad_above_one(j: Judgement) -> Diagnosis | None:
    """A gradient norm that never comes down on any layer is a sustained explosion, not one bad batch."""
    layers = list(range(j.model.recurrent.num_layers))
    norms = pd.concat({k: j.data.series(rd.GRAD_NORM, k) for k in layers}, axis=1, join="inner")
    if norms.empty:
        return None
    start, length = _longest_run((norms > GRAD_LIMIT).all(axis=1).to_numpy())
    if length < GRAD_PATIENCE:
        return None
    streak = norms.iloc[start:start + length]
    first, last = int(streak.index[0]), int(streak.index[-1])
    lo, hi = float(streak.min().min()), float(streak.max().max())
    who = "every recurrent layer" if len(layers) > 1 else "the recurrent layer"
    severity = j.severity(EXPLODING)
    tail = "the gradients are too large all the time" if severity == PROBLEM else _no_harm(j)
    if severity == NOTE and j.model.clip == "norm":
        tail += f"; clipping at {j.model.clip_threshold:g} bounded each step"
    message = (f"The gradient norm of {who} stayed above {GRAD_LIMIT:g} for {length} steps in a row (steps "
               f"{first}-{last}, between {lo:.3g} and {hi:.3g}), {tail}.")
    evidence = {"layers": layers, "start_step": first, "end_step": last, "steps": length,
                "min_value": lo, "max_value": hi, "limit": GRAD_LIMIT}
    return Diagnosis(EXPLODING, "grad_above_one", message, evidence,
                     _cures(j, EXPLODING, *explosion_cures(j.config)), severity)


def _loss_around(data: RunData, step: int) -> tuple[float | None, float | None]:
    """Median training loss over the SPIKE_WINDOW steps before `step` and from it on: what a jump did to it."""
    loss = _finite(data.series(rd.LOSS))
    before = loss[(loss.index < step) & (loss.index >= step - SPIKE_WINDOW)]
    after = loss[(loss.index >= step) & (loss.index < step + SPIKE_WINDOW)]
    return (float(before.median()) if len(before) else None, float(after.median()) if len(after) else None)


def spike_reference(model: ModelDescription) -> float:
    """The norm a spike is measured against besides its recent median: the clipping threshold, else GRAD_LIMIT."""
    return model.clip_threshold if model.clip == "norm" else GRAD_LIMIT


def check_clip_spikes(j: Judgement) -> Diagnosis | None:
    """Sudden jumps of the global norm are cliffs in the loss (Pascanu et al. 2013), which clipping tames."""
    s = _finite(j.data.series(rd.GRAD_NORM_PRE_CLIP))
    median = s.rolling(SPIKE_WINDOW, min_periods=1).median().shift(1)  # the preceding window, not the spike
    reference = spike_reference(j.model)
    scale = np.maximum(median.fillna(0.0), reference)
    spikes = s[s > SPIKE_FACTOR * scale]
    if spikes.empty:
        return None
    ratio = spikes / scale[spikes.index]
    step = int(ratio.idxmax())
    value, med, factor = float(s[step]), float(median.fillna(0.0)[step]), float(ratio[step])
    against = "its recent median" if med > reference else \
        f"the clipping threshold {reference:g}" if j.model.clip == "norm" else f"the line at {reference:g}"
    count = len(spikes)
    before, after = _loss_around(j.data, step)
    loss = ("" if before is None or after is None else
            f"; the training loss went from {before:.3g} before it to {after:.3g} after")
    severity = j.severity(EXPLODING)
    if severity == PROBLEM:
        message = (f"The gradient norm jumped above {SPIKE_FACTOR:g}x {against} {_times(count)}; "
                   f"the largest jump, at step {step}, reached {value:.3g} ({factor:.3g}x){loss}: the loss surface "
                   "has steep cliffs" + (f" that clipping at {j.model.clip_threshold:g} did not tame."
                                         if j.model.clip == "norm" else "."))
    elif j.model.clip == "norm":
        message = (f"Clipping capped {count} jump{'s' * (count != 1)} of the gradient norm above "
                   f"{SPIKE_FACTOR:g}x {against} (the largest, {value:.3g} at step {step}, {factor:.3g}x{loss}) "
                   f"{_no_harm(j)}.")
    else:
        message = (f"The gradient norm jumped above {SPIKE_FACTOR:g}x {against} {_times(count)} "
                   f"(the largest, {value:.3g} at step {step}, {factor:.3g}x{loss}) {_no_harm(j)}.")
    evidence = {"count": count, "step": step, "value": value, "median": med, "reference": reference,
                "factor": factor, "spike_factor": SPIKE_FACTOR, "window": SPIKE_WINDOW,
                "loss_before": _num(before), "loss_after": _num(after)}
    return Diagnosis(EXPLODING, "clip_spikes", message, evidence,
                     _cures(j, EXPLODING, *explosion_cures(j.config)), severity)


# --- vanishing rules ------------------------------------------------------------------------------------
def check_time_decay(j: Judgement) -> Diagnosis | None:
    """How much of the gradient at the loss reaches the input the task needs: the direct measure of vanishing."""
    reach = j.reach
    if reach is None or (reach.ratio >= VANISHED and reach.first_ratio >= VANISHED):
        return None
    dep, fit, T = j.dependency, reach.fit, len(reach.profile)
    where = (f"the gradient reaching {dep.source_name} (time step {dep.source}) is "
             f"{fraction_of(reach.ratio, f'the one at {dep.target_name} (time step {min(dep.target, T)})')}")
    horizon = (f"its memory horizon is ~{fit.horizon:.0f} steps" if fit.horizon is not None
               else "the profile does not decay steadily")
    severity = j.severity(VANISHING)
    if severity == PROBLEM:
        shorter = (f"{horizon}, shorter than the {dep.distance} steps back to {dep.source_name}"
                   if fit.horizon is not None and fit.horizon < dep.distance
                   else f"too little to learn from over {dep.distance} steps")
        message = (f"Over the last recorded steps (to step {reach.step}), {where}: {shorter}, and the run did not "
                   f"learn ({j.outcome.metric_text()}).")
    elif reach.ratio < VANISHED:
        why = (": Adam divides each weight's step by that weight's own gradient size, so even a tiny gradient "
               "moves its weight (Kingma & Ba 2015)" if j.model.optimizer == "adam" and j.outcome.beaten else "")
        message = (f"Over the last recorded steps (to step {reach.step}), {where} ({horizon}), "
                   f"{_after_vanishing(j)}{why}.")
    else:
        how = ("Adam's rescaled steps let the model learn to carry it" if j.model.optimizer == "adam"
               else "training taught the network to carry it")
        message = (f"At step {reach.first_step}, only {share_text(reach.first_ratio)} of the gradient at "
                   f"{dep.target_name} reached {dep.source_name}; by step {reach.step} it is "
                   f"{fraction_of(reach.ratio, 'the one at ' + dep.target_name)}: {how}"
                   + (f" ({j.outcome.metric_text()})." if j.outcome.beaten
                      else f", though the run has not learned yet ({j.outcome.metric_text()})."))
    evidence = {"step": reach.step, "layer": 0, "gain": _num(fit.gain), "ratio": _num(fit.ratio),
                "horizon": _num(fit.horizon), "underflow_steps": fit.underflow_steps, "seq_len": T,
                "reach": reach.ratio, "first_step": reach.first_step, "first_reach": reach.first_ratio,
                "source": dep.source, "target": dep.target, "distance": dep.distance, "limit": VANISHED}
    return Diagnosis(VANISHING, "time_decay", message, evidence, _cures(j, VANISHING, *VANISHING_CURES), severity)


_HIDDEN_SATURATED = {"tanh": "saturated (|h| > 0.99, where tanh is flat)",
                     "sigmoid": "saturated near 0 or 1, where the sigmoid is flat",
                     "relu": "dead (stuck at 0, where ReLU has slope 0)",
                     "linear": "saturated"}


def check_saturation(j: Judgement) -> Diagnosis | None:
    """Saturated units and gates have slope ~0, so the gradient through them is cut at every step."""
    module, found = j.model.recurrent, []  # dicts with layer, unit, step, share
    for layer in range(module.num_layers):
        s = _finite(j.data.series(rd.HIDDEN_SATURATION, layer))
        if len(s) and s.iloc[-1] > SATURATION_LIMIT:
            found.append({"layer": layer, "unit": "hidden", "step": int(s.index[-1]), "share": float(s.iloc[-1])})
    gates = j.data.gates
    if not gates.empty:
        latest = gates[gates["step"] == gates["step"].max()]
        for (layer, gate), g in latest.groupby(["layer", "gate"]):
            if gate not in SIGMOID_GATES[module.cell]:
                continue
            low, high = g["frac_low"].mean(), g["frac_high"].mean()
            share = low if gate == MEMORY_GATES.get(module.cell) else low + high
            if share > GATE_SATURATION_LIMIT:
                found.append({"layer": int(layer), "unit": str(gate), "step": int(g["step"].iloc[0]),
                              "share": float(share)})
    if not found:
        return None
    worst = max(found, key=lambda f: f["share"])
    layer, unit, share = worst["layer"], worst["unit"], worst["share"]
    if unit == "hidden":
        what = _HIDDEN_SATURATED[module.activation_of_state]
        detail = f"{share:.0%} of the hidden units of layer {layer} are {what}, so almost no gradient passes back"
    elif unit == MEMORY_GATES.get(module.cell):
        detail = (f"layer {layer}'s {unit} gate is nearly closed (< 0.1) {share:.0%} of the time, so the memory "
                  "is wiped at almost every step")
    else:
        detail = (f"layer {layer}'s {unit} gate is stuck near 0 or 1 {share:.0%} of the time, where the sigmoid "
                  "passes almost no gradient")
    severity = j.severity(VANISHING)
    message = f"At step {worst['step']}, {detail}" + ("." if severity == PROBLEM else f": {_after_vanishing(j)}.")
    limit = SATURATION_LIMIT if unit == "hidden" else GATE_SATURATION_LIMIT
    evidence = {**worst, "limit": limit, "saturated": found}
    return Diagnosis(VANISHING, "saturation", message, evidence,
                     _cures(j, VANISHING, *SATURATION_CURES), severity)


def check_spectral(j: Judgement) -> Diagnosis | None:
    """For a vanilla RNN, sigma_max(W_hh) < 1/gamma proves the gradient must vanish (Pascanu et al. 2013)."""
    module = j.model.recurrent
    if module.cell != "rnn":
        return None
    bound = vanishing_bound(module.activation)
    found = []  # (sigma_max, layer, step)
    for layer in range(module.num_layers):
        s = _finite(j.data.series(rd.SIGMA_MAX, layer, tensor=module.weight_hh(layer)))
        if len(s) and s.iloc[-1] < bound:
            found.append((float(s.iloc[-1]), layer, int(s.index[-1])))
    if not found:
        return None
    sigma, layer, step = min(found)
    severity = j.severity(VANISHING)
    message = (f"At step {step}, the largest singular value of layer {layer}'s recurrent matrix is {sigma:.3g}, "
               f"below 1/γ = {bound:g} for {module.activation}: each step back in time multiplies the "
               f"gradient by at most {sigma * GAMMA[module.activation]:.3g}, so it must vanish"
               + ("." if severity == PROBLEM else f"; {_after_vanishing(j)}."))
    evidence = {"layer": layer, "step": step, "sigma_max": sigma, "bound": bound,
                "activation": module.activation}
    return Diagnosis(VANISHING, "spectral", message, evidence,
                     _cures(j, VANISHING, *SPECTRAL_CURES), severity)


CHECKS = (check_nonfinite, check_loss_divergence, check_weight_growth, check_grad_above_one, check_clip_spikes,
          check_time_decay, check_saturation, check_spectral)


def diagnose_judged(j: Judgement) -> list[Diagnosis]:
    """Every rule that fires: problems before notes, exploding before vanishing within each (an explosion
    usually explains the rest of the charts)."""
    found = [d for check in CHECKS if (d := check(j)) is not None]
    return sorted(found, key=lambda d: d.severity != PROBLEM)  # stable: rule order within each severity


def diagnose(data: RunData, config: RunConfig, outcome: Outcome) -> list[Diagnosis]:
    """`diagnose_judged` of the run judged here."""
    return diagnose_judged(judge(data, config, outcome))
