"""Remedies: concrete `RunConfig` changes that a diagnosis proposes, so it ends in an experiment, not a verdict.

Each builder returns the change it recommends for a config, or None where it does not apply; `remedies_for`
keeps only changes that are valid and change something, stripped of the fields the run already has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .config import ConfigError, RunConfig
from .gradflow import vanishing_bound

CLIP_THRESHOLD = 1.0  # the config default; Pascanu et al. 2013 set it near the typical gradient norm
CLIP_TIGHTEN = 0.5  # factor on a threshold that already fails to hold the explosion
LR_FACTOR = 0.1
WEIGHT_DECAY = 1e-4  # an L2 penalty pulls every weight toward 0, countering exponential growth
# Initial bias of the gate that keeps the state. LSTM: 1 (Jozefowicz et al. 2015). GRU: 2, as in lesson 5; with
# bias 1 the GRU stayed at chance on lesson 3's sentences while bias 2 learned them on 5 of 5 seeds (measured).
FORGET_BIAS = {"lstm": 1.0, "gru": 2.0}
# Le et al. 2015 train the IRNN with small steps; with lesson 3's lr 0.1 and momentum 0.9 its ReLU units die and
# it stays at chance, with lr 0.01 and no momentum it learns lesson 3's sentences on 4 of 5 seeds (measured).
IRNN_LR = 0.01
ADAM_LR = 1e-3  # Kingma & Ba 2015's default; lesson 10
# Clipping bounds the gradient, not the step: with SGD an update moves at most lr · threshold / (1 − momentum).
# Lesson 2 clips at 1 with lr 0.1 and momentum 0.9, a bound of 1, and learns; clipped at 1 with lr 20 a GRU still
# blew up (measured), so clipping comes with the learning rate that keeps this bound.
MAX_SGD_STEP = 1.0
# init_scale above 1 scales W_hh beyond its scheme (for orthogonal, identity and normal: a spectral radius above
# 1), so the gradient grows with every step back in time from the start: the initialisation is the first suspect.
LARGE_INIT = 1.0


@dataclass(frozen=True)
class Remedy:
    """A concrete config change to try next, so a diagnosis ends in an experiment, not a verdict."""

    label: str
    changes: dict  # RunConfig field -> new value
    code: str = ""  # for a watched model, which has no RunConfig: the lines to put in the user's own script


def _round(x: float) -> float:
    return float(f"{x:.3g}")  # 0.1 * 0.1 would print as 0.010000000000000002


def _step_bound(config: RunConfig, threshold: float) -> dict:
    """The learning rate that keeps a clipped step within MAX_SGD_STEP (Adam: its default), when it is larger."""
    if config.optimizer == "adam":
        return {"lr": ADAM_LR} if config.lr > ADAM_LR else {}
    lr = _round(MAX_SGD_STEP * (1 - config.momentum) / threshold)
    return {"lr": lr} if config.lr > lr else {}


def _clip(config: RunConfig) -> Remedy:
    if config.clip != "norm":
        step = _step_bound(config, CLIP_THRESHOLD)
        also = f", learning rate {step['lr']:g}" if step else ""
        return Remedy(f"Clip the gradient norm at {CLIP_THRESHOLD:g}{also}",
                      {"clip": "norm", "clip_threshold": CLIP_THRESHOLD, **step})
    lower = min(CLIP_THRESHOLD, config.clip_threshold * CLIP_TIGHTEN)
    return Remedy(f"Clip the gradient norm at {lower:g} instead of {config.clip_threshold:g}",
                  {"clip_threshold": lower})


def _bounded_step(config: RunConfig) -> Remedy | None:
    """For a run that clips by norm but whose clipped steps can still be large."""
    step = _step_bound(config, config.clip_threshold) if config.clip == "norm" else {}
    if not step:
        return None
    return Remedy(f"Lower the learning rate to {step['lr']:g}: smaller clipped steps", step)


def _lower_lr(config: RunConfig) -> Remedy:
    lr = _round(config.lr * LR_FACTOR)
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


def _gate_bias(config: RunConfig, cell: str) -> dict:
    """The forget/update-gate bias a switch to `cell` should bring, when the current one is lower."""
    return {"forget_bias": FORGET_BIAS[cell]} if config.forget_bias < FORGET_BIAS[cell] else {}


def _to_lstm(config: RunConfig) -> Remedy | None:
    if config.cell == "lstm":
        return None
    return Remedy("Use an LSTM: its cell state carries the gradient",
                  {"cell": "lstm", **_gate_bias(config, "lstm")})


def _gated_for_explosion(config: RunConfig) -> Remedy | None:
    return _to_lstm(config) if config.cell == "rnn" else None


def _to_gru(config: RunConfig) -> Remedy | None:
    if config.cell != "rnn":
        return None
    return Remedy(f"Use a GRU with update-gate bias {FORGET_BIAS['gru']:g}",
                  {"cell": "gru", **_gate_bias(config, "gru")})


def _forget_bias(config: RunConfig) -> Remedy | None:
    if config.cell == "rnn" or config.forget_bias >= FORGET_BIAS[config.cell]:
        return None
    gate = "forget" if config.cell == "lstm" else "update"
    return Remedy(f"Set the {gate}-gate bias to {FORGET_BIAS[config.cell]:g} (Jozefowicz et al. 2015)",
                  _gate_bias(config, config.cell))


def _irnn(config: RunConfig) -> Remedy | None:
    if config.cell != "rnn":
        return None
    small_steps = {}
    if config.optimizer == "sgd" and (config.lr > IRNN_LR or config.momentum > 0):
        small_steps = {"lr": min(config.lr, IRNN_LR), "momentum": 0.0}
    how = f", lr {small_steps['lr']:g}, no momentum" if small_steps else ""
    return Remedy(f"Use an IRNN: ReLU, identity W_hh{how}",
                  {"init": "identity", "activation": "relu", "init_scale": 1.0, **small_steps})


def _orthogonal(config: RunConfig) -> Remedy | None:
    # All singular values 1 sit on the bound for gamma = 1 but far below 1/gamma = 4 for a sigmoid RNN.
    if config.cell == "rnn" and vanishing_bound(config.activation) > 1.0:
        return None
    return Remedy("Initialise W_hh orthogonally (singular values 1)",
                  {"init": "orthogonal", "init_scale": 1.0})


def _adam(config: RunConfig) -> Remedy | None:
    if config.optimizer == "adam":
        return None
    # Adam rescales each weight's step by its own gradient's size, so small gradients still move the weights.
    return Remedy(f"Train with Adam at lr {ADAM_LR:g} (lesson 10)", {"optimizer": "adam", "lr": ADAM_LR})


def _tanh(config: RunConfig) -> Remedy | None:
    # tanh's slope is 1 around 0 where the sigmoid's is at most 1/4, and no tanh unit dies as a ReLU unit does.
    if config.cell != "rnn" or config.activation not in ("sigmoid", "relu"):
        return None
    return Remedy("Use tanh: slope 1 around 0, no dead units", {"activation": "tanh"})


def _relu_he(config: RunConfig) -> Remedy | None:
    # The sigmoid's slope is at most 1/4, ReLU's is 1. (On lesson 3's tanh RNN ReLU with He init stayed at chance,
    # measured; on lesson 7's sigmoid RNN it learned.)
    if config.cell != "rnn" or config.activation != "sigmoid":
        return None
    return Remedy("Use ReLU with He init: slope 1, not 1/4",
                  {"activation": "relu", "init": "he", "init_scale": 1.0})


Builder = Callable[[RunConfig], "Remedy | None"]


def explosion_cures(config: RunConfig, at_initialisation: bool = False) -> tuple[Builder, ...]:
    """Clipping first when the run does not clip by norm (Pascanu et al. 2013). When it does: a learning rate that
    keeps clipped steps small, a smaller start when W_hh began large, then a tighter threshold (a 2-layer LSTM that
    lost what it learned under clipping at 1 learned at 0.5, where lr / 10 left it at chance: measured). An
    explosion `at_initialisation` (the untrained model's forward pass overflowed) no update caused: a smaller start
    first."""
    if at_initialisation:
        return _smaller_init, _clip, _lower_lr, _gated_for_explosion
    if config.clip != "norm":
        return _clip, _smaller_init, _lower_lr, _gated_for_explosion
    first = (_bounded_step, _smaller_init) if config.init_scale > LARGE_INIT else (_bounded_step,)
    return *first, _clip, _lower_lr, _smaller_init, _gated_for_explosion


# Ordered by how often each cured lesson 3's vanished tanh RNN on seeds 0-4 (measured: GRU with update bias 2,
# orthogonal W_hh and Adam 5 of 5, the IRNN with small steps 4, the LSTM 2); gated cells first fix the bias.
VANISHING_CURES: tuple[Builder, ...] = (_forget_bias, _to_gru, _orthogonal, _to_lstm, _irnn, _adam, _tanh, _relu_he)
WEIGHT_GROWTH_CURES: tuple[Builder, ...] = (_weight_penalty, _lower_lr, _clip, _smaller_init)
# Saturated tanh units come from large weights, so smaller ones help besides a gated cell.
SATURATION_CURES: tuple[Builder, ...] = (_forget_bias, _to_gru, _to_lstm, _smaller_init, _irnn)
# sigma_max(W_hh) below 1/gamma is exactly what an orthogonal W_hh (every singular value 1) removes.
SPECTRAL_CURES: tuple[Builder, ...] = (_orthogonal, _to_gru, _to_lstm, _irnn, _adam, _tanh, _relu_he)


def _changes_config(config: RunConfig, changes: dict) -> bool:
    try:
        return config.replace(**changes) != config
    except ConfigError:
        return False


def remedies_for(config: RunConfig, *builders: Builder) -> tuple[Remedy, ...]:
    """Remedies that are valid configs, each change only the fields it really changes, so every button does
    something and none proposes what the run already has."""
    out: list[Remedy] = []
    for build in builders:
        remedy = build(config)
        if remedy is None:
            continue
        changes = {k: v for k, v in remedy.changes.items() if getattr(config, k) != v}
        remedy = Remedy(remedy.label, changes)
        if remedy not in out and changes and _changes_config(config, changes):
            out.append(remedy)
    return tuple(out)


# Fields that do not change what a lesson shows: a lesson's failing config fails at other seeds and lengths too.
_INCIDENTAL = ("seed", "steps", "record_every", "on_nonfinite")


def _essence(config: RunConfig) -> RunConfig:
    return config.replace(**{name: getattr(RunConfig(), name) for name in _INCIDENTAL})


def fit_to_known_runs(config: RunConfig, remedies: tuple[Remedy, ...], cures: dict[RunConfig, int],
                      failures: set[RunConfig]) -> tuple[Remedy, ...]:
    """Remedies fitted to runs whose outcome is known (the lessons): none that leads to what a known run shows
    failing, whatever the seed or length; those that lead exactly to a known cure first, in the cures' order
    (lesson 3's tanh RNN is offered lesson 4's LSTM first). A cure is promoted only for the very config it was
    shown on: lesson 4's LSTM learns at seed 0, not at every seed."""
    failing = {_essence(c) for c in failures}

    def result(remedy: Remedy) -> RunConfig:
        return config.replace(**remedy.changes)

    kept = [r for r in remedies if _essence(result(r)) not in failing]
    return tuple(sorted(kept, key=lambda r: cures.get(result(r), math.inf)))
