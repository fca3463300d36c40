"""Rules that read one run's recording and say, in plain words, whether its gradients explode or vanish.

Each ``check_*`` function is pure over the recorded tables (`RunData`) and the run's `RunConfig`: it returns
a `Diagnosis` (what fired, the numbers behind it, concrete config changes that should help) or None.
`diagnose` runs every rule, exploding ones first. Thresholds are module constants so charts can draw them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import rundata as rd
from .config import ConfigError, RunConfig
from .rundata import RunData

# --- exploding ------------------------------------------------------------------------------------------
# Learning moves a layer's weight norm by a few percent over tens of steps; more than doubling within 50
# recorded steps is the exponential growth that lets ||W_hh|| pass the explosion bound (Pascanu et al. 2013).
WEIGHT_GROWTH_FACTOR = 2.0
WEIGHT_GROWTH_WINDOW = 50
# The gradient-norm line the dashboard draws (and the default clipping threshold): a healthy layer's norm
# dips below it as the loss settles; staying above it on every layer means steps are always large.
GRAD_LIMIT = 1.0
GRAD_PATIENCE = 20  # consecutive steps above GRAD_LIMIT before it is a pattern, not a bad batch
# Pascanu et al. 2013: exploding gradients show up as sudden jumps of the norm at "cliffs" of the loss
# surface. A jump to 10x the median of the preceding 20 steps is far outside ordinary batch noise.
SPIKE_FACTOR = 10.0
SPIKE_WINDOW = 20

# --- vanishing ------------------------------------------------------------------------------------------
# Bengio et al. 1994: in the regime that stores information robustly, the gradient from step T back to
# step t shrinks exponentially in T - t. Below 1e-3 of its value at T, an early input's gradient is drowned
# by the recent ones: this is both the firing ratio and the line that defines the horizon.
VANISHED = 1e-3
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
# Pascanu et al. 2013: ||dh_t/dh_{t-1}|| <= sigma_max(W_hh) * gamma, with gamma the bound on the activation's
# slope; sigma_max < 1/gamma therefore guarantees that gradients vanish.
GAMMA = {"tanh": 1.0, "sigmoid": 0.25, "relu": 1.0, "linear": 1.0}

# --- remedies -------------------------------------------------------------------------------------------
CLIP_THRESHOLD = 1.0  # the config default; Pascanu et al. 2013 set it near the typical gradient norm
CLIP_TIGHTEN = 0.5  # factor on a threshold that already fails to hold the explosion
LR_FACTOR = 0.1
WEIGHT_DECAY = 1e-4  # an L2 penalty pulls every weight toward 0, countering exponential growth
FORGET_BIAS = 1.0  # Jozefowicz et al. 2015


@dataclass(frozen=True)
class Remedy:
    """A concrete config change to try next, so a diagnosis ends in an experiment, not a verdict."""

    label: str
    changes: dict  # RunConfig field -> new value


@dataclass(frozen=True)
class Diagnosis:
    """One rule that fired, with the numbers a student can check on the charts."""

    kind: str  # "exploding" | "vanishing"
    rule: str
    message: str
    evidence: dict  # JSON-safe: non-finite numbers are None
    remedies: tuple[Remedy, ...]

    def to_dict(self) -> dict:
        """Plain data for the store, the CLI and share links."""
        return {"kind": self.kind, "rule": self.rule, "message": self.message, "evidence": self.evidence,
                "remedies": [{"label": r.label, "changes": dict(r.changes)} for r in self.remedies]}


@dataclass(frozen=True)
class TimeGradientFit:
    """How ||dL/dh_t|| decays going back in time, in numbers that have a plain meaning."""

    gain: float | None  # per-step factor going back one step (< 1: vanishing); None with < 2 positive entries
    horizon: float | None  # steps back until the gradient falls below VANISHED of its value at T (gain < 1)
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
    horizon = math.log(VANISHED) / math.log(gain) if gain is not None and 0 < gain < 1 else None
    ratio = float(p[0] / p[-1]) if len(p) and np.isfinite(p[0]) and np.isfinite(p[-1]) and p[-1] > 0 else None
    return TimeGradientFit(gain=gain, horizon=horizon, ratio=ratio, underflow_steps=int((p == 0.0).sum()))


def vanishing_bound(activation: str) -> float:
    """The 1/gamma line below which sigma_max(W_hh) guarantees vanishing gradients (Pascanu et al. 2013)."""
    return 1.0 / GAMMA[activation]


# --- remedies -------------------------------------------------------------------------------------------
def _clip(config: RunConfig) -> Remedy:
    if config.clip != "norm":
        return Remedy(f"Clip the gradient norm at {CLIP_THRESHOLD:g}",
                      {"clip": "norm", "clip_threshold": CLIP_THRESHOLD})
    lower = min(CLIP_THRESHOLD, config.clip_threshold * CLIP_TIGHTEN)
    return Remedy(f"Clip the gradient norm at {lower:g} instead of {config.clip_threshold:g}",
                  {"clip_threshold": lower})


def _lower_lr(config: RunConfig) -> Remedy:
    lr = float(f"{config.lr * LR_FACTOR:.3g}")  # 0.1 * 0.1 would print as 0.010000000000000002
    return Remedy(f"Lower the learning rate to {lr:g}", {"lr": lr})


def _smaller_init(config: RunConfig) -> Remedy | None:
    # PyTorch's default U(±1/√H) has the smallest weight variance of the schemes: 1/(3H).
    if config.init == "default" and config.init_scale <= 1.0:
        return None
    return Remedy("Start from PyTorch's default small weights U(±1/√H)", {"init": "default", "init_scale": 1.0})


def _weight_penalty(config: RunConfig) -> Remedy | None:
    if config.weight_decay >= WEIGHT_DECAY:
        return None
    return Remedy(f"Add an L2 weight penalty λ = {WEIGHT_DECAY:g}", {"weight_decay": WEIGHT_DECAY})


def _to_lstm(config: RunConfig) -> Remedy | None:
    if config.cell == "lstm":
        return None
    # The forget bias is carried over from the current config, so set it to the recommended 1 if it is lower.
    bias = {"forget_bias": FORGET_BIAS} if config.forget_bias < FORGET_BIAS else {}
    return Remedy("Use an LSTM: its gated cell state carries gradients across time", {"cell": "lstm", **bias})


def _gated_for_explosion(config: RunConfig) -> Remedy | None:
    return _to_lstm(config) if config.cell == "rnn" else None


def _to_gru(config: RunConfig) -> Remedy | None:
    if config.cell != "rnn":
        return None
    bias = {"forget_bias": FORGET_BIAS} if config.forget_bias < FORGET_BIAS else {}
    return Remedy("Use a GRU: its update gate lets the state pass through unchanged", {"cell": "gru", **bias})


def _forget_bias(config: RunConfig) -> Remedy | None:
    if config.cell == "rnn" or config.forget_bias >= FORGET_BIAS:
        return None
    gate = "forget" if config.cell == "lstm" else "update"
    return Remedy(f"Set the {gate}-gate bias to {FORGET_BIAS:g} (Jozefowicz et al. 2015)",
                  {"forget_bias": FORGET_BIAS})


def _irnn(config: RunConfig) -> Remedy | None:
    if config.cell != "rnn":
        return None
    return Remedy("Use an IRNN: identity recurrence with ReLU (Le et al. 2015)",
                  {"init": "identity", "activation": "relu", "init_scale": 1.0})


def _orthogonal(config: RunConfig) -> Remedy | None:
    # All singular values 1 sit on the bound for gamma = 1 but far below 1/gamma = 4 for a sigmoid RNN.
    if config.cell == "rnn" and vanishing_bound(config.activation) > 1.0:
        return None
    return Remedy("Initialise W_hh orthogonally, so every singular value is 1",
                  {"init": "orthogonal", "init_scale": 1.0})


def _relu_he(config: RunConfig) -> Remedy | None:
    if config.cell != "rnn":
        return None
    return Remedy("Use ReLU with He initialisation: no saturation, slope 1",
                  {"activation": "relu", "init": "he", "init_scale": 1.0})


def _changes_config(config: RunConfig, changes: dict) -> bool:
    try:
        return config.replace(**changes) != config
    except ConfigError:
        return False


def _remedies(config: RunConfig, *builders: Callable[[RunConfig], Remedy | None]) -> tuple[Remedy, ...]:
    """Only remedies that are valid configs and differ from the current one, so every button does something."""
    out: list[Remedy] = []
    for build in builders:
        remedy = build(config)
        if remedy is not None and remedy not in out and _changes_config(config, remedy.changes):
            out.append(remedy)
    return tuple(out)


# --- helpers --------------------------------------------------------------------------------------------
def _num(x) -> float | None:
    """A JSON-safe float: NaN and ±Inf become None."""
    return float(x) if x is not None and math.isfinite(x) else None


def _int(x) -> int | None:
    return None if pd.isna(x) else int(x)


def _finite(s: pd.Series) -> pd.Series:
    return s[np.isfinite(s.to_numpy(dtype=float))]


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


# --- exploding rules ------------------------------------------------------------------------------------
def check_nonfinite(data: RunData, config: RunConfig) -> Diagnosis | None:
    """A NaN or Inf anywhere is the end point of an explosion, so the first one is the thing to look at."""
    events = data.events
    bad = events[events["kind"] == rd.EVENT_NONFINITE].sort_values("step", kind="stable")
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
    return Diagnosis("exploding", "nonfinite", message, evidence,
                     _remedies(config, _clip, _lower_lr, _smaller_init, _gated_for_explosion))


def check_weight_growth(data: RunData, config: RunConfig) -> Diagnosis | None:
    """Weights that grow exponentially push sigma_max(W_hh) past the point where gradients explode."""
    found = []  # (end_step, layer, start_step, start_value, end_value)
    for layer in range(config.num_layers):
        s = _finite(data.series(rd.WEIGHT_NORM, layer))
        s = s[s > 0]
        low = s.rolling(WEIGHT_GROWTH_WINDOW, min_periods=1).min()
        hits = np.flatnonzero(s.to_numpy() > WEIGHT_GROWTH_FACTOR * low.to_numpy())
        if hits.size:
            j = int(hits[0])
            window = s.iloc[max(0, j - WEIGHT_GROWTH_WINDOW + 1):j + 1]
            start = window[window == window.min()].index[-1]  # the latest low point: the tightest range
            found.append((int(s.index[j]), layer, int(start), float(window[start]), float(s.iloc[j])))
    if not found:
        return None
    end, layer, start, a, b = min(found)
    message = (f"The weights of layer {layer} grew {b / a:.3g}x in {end - start} steps (norm {a:.3g} at step "
               f"{start}, {b:.3g} at step {end}): weights growing this fast make the gradients explode.")
    evidence = {"layer": layer, "start_step": start, "end_step": end, "start_value": a, "end_value": b,
                "factor": b / a}
    return Diagnosis("exploding", "weight_growth", message, evidence,
                     _remedies(config, _weight_penalty, _lower_lr, _clip, _smaller_init))


def check_grad_above_one(data: RunData, config: RunConfig) -> Diagnosis | None:
    """A gradient norm that never comes down on any layer is a sustained explosion, not one bad batch."""
    layers = list(range(config.num_layers))
    norms = pd.concat({k: data.series(rd.GRAD_NORM, k) for k in layers}, axis=1, join="inner")
    if norms.empty:
        return None
    start, length = _longest_run((norms > GRAD_LIMIT).all(axis=1).to_numpy())
    if length < GRAD_PATIENCE:
        return None
    streak = norms.iloc[start:start + length]
    first, last = int(streak.index[0]), int(streak.index[-1])
    lo, hi = float(streak.min().min()), float(streak.max().max())
    who = "every recurrent layer" if len(layers) > 1 else "the recurrent layer"
    message = (f"The gradient norm of {who} stayed above {GRAD_LIMIT:g} for {length} steps in a row (steps "
               f"{first}-{last}, between {lo:.3g} and {hi:.3g}): the gradients are too large all the time.")
    evidence = {"layers": layers, "start_step": first, "end_step": last, "steps": length,
                "min_value": lo, "max_value": hi, "limit": GRAD_LIMIT}
    return Diagnosis("exploding", "grad_above_one", message, evidence,
                     _remedies(config, _clip, _lower_lr, _smaller_init, _gated_for_explosion))


def check_clip_spikes(data: RunData, config: RunConfig) -> Diagnosis | None:
    """Sudden jumps of the global norm are cliffs in the loss (Pascanu et al. 2013), which clipping tames.

    A jump counts only when it also ends above GRAD_LIMIT: a norm of 0.3 after a median of 0.01 is a model
    starting to learn, not an explosion."""
    s = _finite(data.series(rd.GRAD_NORM_PRE_CLIP))
    median = s.rolling(SPIKE_WINDOW).median().shift(1)  # the preceding window only, not the spike itself
    ratio = s / median
    spikes = ratio[(median > 0) & (ratio > SPIKE_FACTOR) & (s > GRAD_LIMIT)]
    if spikes.empty:
        return None
    step = int(spikes.idxmax())
    value, med, factor = float(s[step]), float(median[step]), float(spikes[step])
    count = len(spikes)
    message = (f"The gradient norm jumped above {SPIKE_FACTOR:g}x its recent median {count} "
               f"time{'s' * (count != 1)}; the largest jump, at step {step}, reached {value:.3g} "
               f"({factor:.0f}x the median {med:.3g}): the loss surface has steep cliffs"
               + (f", which clipping at {config.clip_threshold:g} caps." if config.clip == "norm" else "."))
    evidence = {"count": count, "step": step, "value": value, "median": med, "factor": factor,
                "spike_factor": SPIKE_FACTOR, "window": SPIKE_WINDOW}
    return Diagnosis("exploding", "clip_spikes", message, evidence, _remedies(config, _clip, _lower_lr))


# --- vanishing rules ------------------------------------------------------------------------------------
def check_time_decay(data: RunData, config: RunConfig) -> Diagnosis | None:
    """The profile of ||dL/dh_t|| over t shows directly how far back in time the network can learn."""
    tg = data.time_grads
    tg = tg[(tg["layer"] == 0).fillna(False).astype(bool)].sort_values(["step", "t"])
    all_finite = tg.groupby("step")["value"].agg(lambda v: bool(np.isfinite(v).all()))
    if not all_finite.any():
        return None
    step = int(all_finite[all_finite].index.max())
    profile = tg.loc[tg["step"] == step, "value"].to_numpy(dtype=float)
    fit = time_gradient_fit(profile)
    T = len(profile)
    decays = fit.gain is not None and fit.gain < 1 and fit.ratio is not None and fit.ratio < VANISHED
    underflows = 0 < fit.underflow_steps < T  # all zeros is no gradient at all, not a decay over time
    if not (decays or underflows):
        return None
    zeros = f"{fit.underflow_steps} of the {T} time steps underflowed to exactly 0"
    if fit.ratio == 0.0:
        head = f"the gradient reaching time step 1 vanished completely ({zeros} in float32)"
    elif fit.ratio is not None:
        head = f"the gradient reaching time step 1 is {fit.ratio:.2g} of the one at time step {T}"
        head += f" and {zeros}" if fit.underflow_steps else ""
    else:
        head = zeros
    if fit.horizon is not None:
        tail = (f"the gradient shrinks x{fit.gain:.3g} per step back in time, so the network cannot learn "
                f"dependencies longer than ~{fit.horizon:.0f} steps")
    else:
        tail = "the signal from the early inputs is lost"
    message = f"At step {step}, {head}: {tail}."
    evidence = {"step": step, "layer": 0, "gain": _num(fit.gain), "ratio": _num(fit.ratio),
                "horizon": _num(fit.horizon), "underflow_steps": fit.underflow_steps, "seq_len": T}
    return Diagnosis("vanishing", "time_decay", message, evidence,
                     _remedies(config, _forget_bias, _to_lstm, _to_gru, _irnn, _orthogonal, _relu_he))


_HIDDEN_SATURATED = {"tanh": "saturated (|h| > 0.99, where tanh is flat)",
                     "sigmoid": "saturated near 0 or 1, where the sigmoid is flat",
                     "relu": "dead (stuck at 0, where ReLU has slope 0)",
                     "linear": "saturated"}


def check_saturation(data: RunData, config: RunConfig) -> Diagnosis | None:
    """Saturated units and gates have slope ~0, so the gradient through them is cut at every step."""
    found = []  # dicts with layer, unit, step, share
    for layer in range(config.num_layers):
        s = _finite(data.series(rd.HIDDEN_SATURATION, layer))
        if len(s) and s.iloc[-1] > SATURATION_LIMIT:
            found.append({"layer": layer, "unit": "hidden", "step": int(s.index[-1]), "share": float(s.iloc[-1])})
    gates = data.gates
    if not gates.empty:
        latest = gates[gates["step"] == gates["step"].max()]
        for (layer, gate), g in latest.groupby(["layer", "gate"]):
            if gate not in SIGMOID_GATES[config.cell]:
                continue
            low, high = g["frac_low"].mean(), g["frac_high"].mean()
            share = low if gate == MEMORY_GATES.get(config.cell) else low + high
            if share > GATE_SATURATION_LIMIT:
                found.append({"layer": int(layer), "unit": str(gate), "step": int(g["step"].iloc[0]),
                              "share": float(share)})
    if not found:
        return None
    worst = max(found, key=lambda f: f["share"])
    layer, unit, share = worst["layer"], worst["unit"], worst["share"]
    if unit == "hidden":
        what = _HIDDEN_SATURATED[config.activation if config.cell == "rnn" else "tanh"]
        detail = f"{share:.0%} of the hidden units of layer {layer} are {what}, so almost no gradient passes back"
    elif unit == MEMORY_GATES.get(config.cell):
        detail = (f"layer {layer}'s {unit} gate is nearly closed (< 0.1) {share:.0%} of the time, so the memory "
                  "is wiped at almost every step")
    else:
        detail = (f"layer {layer}'s {unit} gate is stuck near 0 or 1 {share:.0%} of the time, where the sigmoid "
                  "passes almost no gradient")
    message = f"At step {worst['step']}, {detail}."
    limit = SATURATION_LIMIT if unit == "hidden" else GATE_SATURATION_LIMIT
    evidence = {**worst, "limit": limit, "saturated": found}
    return Diagnosis("vanishing", "saturation", message, evidence,
                     _remedies(config, _forget_bias, _to_lstm, _to_gru, _smaller_init, _irnn))


def check_spectral(data: RunData, config: RunConfig) -> Diagnosis | None:
    """For a vanilla RNN, sigma_max(W_hh) < 1/gamma proves the gradient must vanish (Pascanu et al. 2013)."""
    if config.cell != "rnn":
        return None
    bound = vanishing_bound(config.activation)
    found = []  # (sigma_max, layer, step)
    for layer in range(config.num_layers):
        s = _finite(data.series(rd.SIGMA_MAX, layer, tensor=f"rnn.weight_hh_l{layer}"))
        if len(s) and s.iloc[-1] < bound:
            found.append((float(s.iloc[-1]), layer, int(s.index[-1])))
    if not found:
        return None
    sigma, layer, step = min(found)
    message = (f"At step {step}, the largest singular value of layer {layer}'s recurrent matrix is {sigma:.3g}, "
               f"below 1/γ = {bound:g} for {config.activation}: each step back in time multiplies the "
               f"gradient by at most {sigma * GAMMA[config.activation]:.3g}, so it must vanish.")
    evidence = {"layer": layer, "step": step, "sigma_max": sigma, "bound": bound,
                "activation": config.activation}
    return Diagnosis("vanishing", "spectral", message, evidence,
                     _remedies(config, _orthogonal, _irnn, _relu_he, _to_lstm, _to_gru))


CHECKS = (check_nonfinite, check_weight_growth, check_grad_above_one, check_clip_spikes,
          check_time_decay, check_saturation, check_spectral)


def diagnose(data: RunData, config: RunConfig) -> list[Diagnosis]:
    """Every rule that fires, exploding first: an explosion usually explains the rest of the charts."""
    return [d for check in CHECKS if (d := check(data, config)) is not None]
