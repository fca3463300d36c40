"""`RunConfig`: the one description of a run that the CLI, the store, share links and the sidebar derive from.

Each field carries its own help text, group, allowed values or bounds in `dataclasses.field(metadata=...)`,
so adding a field here adds a CLI flag, a URL parameter and a control without a second list anywhere.
The bounds keep one run safe on a shared 2-core server.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from .cells import ACTIVATION_FNS, GATE_BLOCKS
from .clipping import CLIPPERS
from .initialisers import INITIALISERS
from .nonfinite import NONFINITE_POLICIES as _POLICIES
from .optimizers import OPTIMIZERS as _OPTIMIZERS
from .tasks import TASKS

# The allowed values of each choice field are its registry's keys: adding a cell, initialiser, task, optimiser,
# clipping or non-finite policy there adds it to the CLI, links and sidebar with no second list.
CELLS = tuple(GATE_BLOCKS)
ACTIVATIONS = tuple(ACTIVATION_FNS)
INITS = tuple(INITIALISERS)
TASK_NAMES = tuple(TASKS)
OPTIMIZERS = tuple(_OPTIMIZERS)
CLIPS = tuple(CLIPPERS)
NONFINITE_POLICIES = tuple(_POLICIES)

GROUPS = ("model", "initialisation", "optimisation & clipping", "task", "recording")


QUOTED_CHARS = 60  # of a user's value echoed in a message: a 10 000-character link value stays one line


def quoted(value: object, limit: int = QUOTED_CHARS) -> str:
    """`value` as Python shows it (repr), cut to `limit` characters, for messages that echo what a user typed."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def sentence(clause: object) -> str:
    """A message clause ("this run is too long …") as the start of a sentence shown on its own."""
    text = str(clause)
    return text[:1].upper() + text[1:]


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the field, the value and what is allowed."""


def _f(label, default, help, group, *, choices=None, lo=None, hi=None, advanced=False, applies=None):
    meta = {"label": label, "help": help, "group": group, "choices": choices, "lo": lo, "hi": hi, "advanced": advanced,
            "applies": applies}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides one training run; equal configs (seed included) give identical runs on CPU."""

    cell: str = _f("Cell", "rnn", "Recurrent cell: vanilla (Elman) RNN, LSTM or GRU.", "model", choices=CELLS)
    activation: str = _f(
        "Activation", "tanh", "Nonlinearity of the vanilla RNN (gated cells always use sigmoid gates and tanh).",
        "model", choices=ACTIVATIONS, applies={"cell": ("rnn",)})
    hidden_size: int = _f("Hidden units", 64, "Hidden units per layer.", "model", lo=1, hi=512)
    num_layers: int = _f("Layers", 1, "Stacked recurrent layers.", "model", lo=1, hi=4)
    init: str = _f("Initialisation", "default", "Weight initialisation scheme, applied per gate block.",
                   "initialisation", choices=INITS)
    init_scale: float = _f(
        "Init scale of W_hh", 1.0, "Multiplier on the recurrent weights W_hh after initialisation; for 'normal' "
        "W_hh ~ N(0, init_scale²/hidden_size), so init_scale ≈ its spectral radius.", "initialisation",
        lo=0.0, hi=100.0)
    forget_bias: float = _f(
        "Forget / update gate bias", 1.0, "Initial bias of the gate that keeps the state: the LSTM's forget gate, "
        "the GRU's update gate (Jozefowicz et al. 2015 recommend 1).", "initialisation", lo=-10.0, hi=10.0,
        applies={"cell": ("lstm", "gru")})
    task: str = _f("Task", "agreement",
                   "Long-range task: subject–verb agreement, the adding problem or the copy task.", "task",
                   choices=TASK_NAMES)
    seq_len: int = _f(
        "Sequence length", 10, "Distance the model must carry information: filler words (agreement), sequence "
        "length (adding) or blank steps (copy).", "task", lo=2, hi=1000)
    attractor_rate: float = _f(
        "Attractor rate", 0.0, "Agreement only: share of filler words replaced by nouns of the opposite number "
        "(attractors).", "task", lo=0.0, hi=1.0, advanced=True, applies={"task": ("agreement",)})
    batch_size: int = _f("Batch size", 64, "Sequences per optimiser step.", "task", lo=1, hi=1024, advanced=True)
    steps: int = _f("Training steps", 300, "Optimiser steps to train for.", "optimisation & clipping", lo=1,
                    hi=100_000)
    optimizer: str = _f(
        "Optimiser", "sgd", "SGD (with momentum) shows vanishing gradients as they are; Adam rescales tiny "
        "gradients and can hide them.", "optimisation & clipping", choices=OPTIMIZERS)
    lr: float = _f("Learning rate", 0.1, "Learning rate.", "optimisation & clipping", lo=1e-7, hi=1e4)
    momentum: float = _f("Momentum", 0.9, "SGD momentum (ignored by Adam).", "optimisation & clipping", lo=0.0,
                         hi=0.999, advanced=True, applies={"optimizer": ("sgd",)})
    weight_decay: float = _f(
        "Weight decay λ", 0.0, "Coefficient λ of the explicit L2 penalty λ/2·Σ‖W‖² on all weight matrices (not "
        "biases), added to the loss and recorded separately.", "optimisation & clipping", lo=0.0, hi=10.0)
    clip: str = _f(
        "Gradient clipping", "norm", "Gradient clipping: none, by global L2 norm (Pascanu et al. 2013) or by "
        "value.", "optimisation & clipping", choices=CLIPS)
    clip_threshold: float = _f(
        "Clip threshold", 1.0, "Clipping threshold: the largest global norm (norm) or |gradient| (value).",
        "optimisation & clipping", lo=1e-6, hi=1e6, applies={"clip": ("norm", "value")})
    on_nonfinite: str = _f(
        "On NaN/Inf", "stop", "On a NaN/Inf loss or gradient: stop the run as 'diverged', or skip that optimiser "
        "step and go on.", "optimisation & clipping", choices=NONFINITE_POLICIES, advanced=True)
    record_every: int = _f(
        "Record every N steps", 10, "Record per-time-step gradients, gates and spectra every N steps (0: only loss "
        "and metric).", "recording", lo=0, hi=100_000, advanced=True)
    seed: int = _f("Seed", 0, "Random seed for data, initialisation and everything else.", "recording", lo=0,
                   hi=2**31 - 1)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))

    # --- round trips -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain field → value mapping (JSON-safe)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """Build from a mapping of field names (strings or typed values); unknown keys are an error."""
        known = field_map()
        unknown = sorted(set(data) - set(known))
        if unknown:
            named = ", ".join(quoted(k) for k in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5
                                                                 else "")
            raise ConfigError(f"unknown config field(s) {named}; allowed: {', '.join(known)}")
        return cls(**{k: parse_value(known[k], v) for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError("config JSON must be an object of field: value")
        return cls.from_dict(data)

    def to_query(self) -> str:
        """URL query string with readable keys; every field (seed included) so a link replays the run."""
        return urlencode(self.to_dict())

    @classmethod
    def from_query(cls, query: str | dict[str, str]) -> "RunConfig":
        """Parse a query string or a mapping of query parameters; keys not in `extra_query_keys` must be fields."""
        pairs = dict(parse_qsl(query.lstrip("?"), keep_blank_values=True)) if isinstance(query, str) else query
        return cls.from_dict({k: v for k, v in pairs.items() if k not in EXTRA_QUERY_KEYS})

    def replace(self, **changes) -> "RunConfig":
        """A copy with some fields changed (validated, values may be strings)."""
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def differences(self, other: "RunConfig") -> dict[str, tuple[Any, Any]]:
        return {k: (v, getattr(other, k)) for k, v in self.to_dict().items() if getattr(other, k) != v}

    def summary(self) -> str:
        """One line naming what matters most, for run lists."""
        cell = f"rnn-{self.activation}" if self.cell == "rnn" else self.cell
        clip = "no clip" if self.clip == "none" else f"clip {self.clip} {self.clip_threshold:g}"
        return (f"{cell} H{self.hidden_size}x{self.num_layers} {self.init}×{self.init_scale:g} "
                f"{self.task} T{self.seq_len} {self.optimizer} lr {self.lr:g} {clip} seed {self.seed}")


# Query parameters that are not config fields but are allowed beside them in a share link.
EXTRA_QUERY_KEYS = ("autorun", "lesson", "variant", "page", "run")


def field_map() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(RunConfig)}


def applies(f: dataclasses.Field, config: RunConfig) -> bool:
    """Whether a field matters for this config (e.g. forget_bias only for LSTM)."""
    cond = f.metadata["applies"] or {}
    return all(getattr(config, k) in allowed for k, allowed in cond.items())


def allowed_text(f: dataclasses.Field) -> str:
    m = f.metadata
    if m["choices"]:
        return "one of " + ", ".join(m["choices"])
    kind = "an integer" if f.type in ("int", int) else "a number"
    return f"{kind} from {m['lo']:g} to {m['hi']:g}"


def parse_value(f: dataclasses.Field, raw: Any) -> Any:
    """Turn a string (flag, URL) or typed value into the field's type, or raise a ConfigError."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "str":
            if not isinstance(raw, str):
                raise ValueError
            return raw.strip().lower()
        if isinstance(raw, bool):
            raise ValueError
        if kind == "int":
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            if isinstance(raw, str):
                raw = raw.strip().replace("_", "")
            return int(float(raw)) if isinstance(raw, str) and "e" in raw.lower() else int(raw)
        return float(raw)
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(f"{f.name}={quoted(raw)} is not valid; allowed: {allowed_text(f)}") from None


def _check(f: dataclasses.Field, value: Any) -> None:
    m = f.metadata
    if m["choices"]:
        if value not in m["choices"]:
            raise ConfigError(f"{f.name}={quoted(value)} is not valid; allowed: {allowed_text(f)}")
        return
    expected = int if f.type in ("int", int) else float
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (expected is int and not isinstance(value, int)):
        raise ConfigError(f"{f.name}={quoted(value)} is not valid; allowed: {allowed_text(f)}")
    if not math.isfinite(value) or not m["lo"] <= value <= m["hi"]:
        raise ConfigError(f"{f.name}={quoted(value)} is out of range; allowed: {allowed_text(f)}")
