"""The tidy tables one run's recording consists of, whether it lives in memory or in the store.

Every consumer (diagnosis, charts, CLI summary) reads a `RunData`, so a live run and a saved one take
the same path (as Cockpit's plotter does). Columns are plain numbers and strings, never tensors.

Conventions
- ``step`` is the 1-based optimiser step the numbers belong to.
- ``layer`` is the recurrent layer index (0-based) or ``<NA>`` for quantities that belong to no recurrent
  layer (the loss, the readout).
- ``tensor`` is a parameter name such as ``"rnn.weight_hh_l0"`` or ``"readout.weight"``; ``""`` means
  an aggregate (over the whole model when ``layer`` is NA, over one recurrent layer otherwise).
- ``t`` is the 1-based time step inside the sequence.
- NaN in ``value`` is data (a non-finite quantity), never a missing row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

# Names in METRICS.name. Global ones have layer NA and tensor "".
LOSS = "loss"  # task loss (without the penalty)
METRIC = "metric"  # accuracy or MSE on the training batch, per the task
HELDOUT_METRIC = "heldout_metric"  # the same on the fixed held-out batch, on the schedule of `heldout`
PENALTY = "penalty"  # the explicit L2 weight penalty added to the loss
GRAD_NORM_PRE_CLIP = "grad_norm_pre_clip"  # global L2 norm of all gradients before clipping
GRAD_NORM_POST_CLIP = "grad_norm_post_clip"
CLIP_FIRED = "clip_fired"  # 1.0 when clipping changed the gradients, else 0.0
STEP_SECONDS = "step_seconds"  # wall time of the whole optimiser step
# Per tensor (tensor = parameter name) and per recurrent layer (tensor = "").
GRAD_NORM = "grad_norm"  # L2 norm of the gradient (pre-clip)
WEIGHT_NORM = "weight_norm"  # L2 norm of the weights after the step
WEIGHT_MAX_ABS = "weight_max_abs"
UPDATE_RATIO = "update_ratio"  # ||w_after - w_before|| / ||w_before||
# Per recurrent layer, on recorded steps only.
HIDDEN_SATURATION = "hidden_saturation"  # share of hidden units saturated (tanh |h|>0.99, sigmoid near 0/1, relu dead)
SIGMA_MAX = "sigma_max"  # largest singular value of the recurrent matrix (tensor = its name)
SPECTRAL_RADIUS = "spectral_radius"  # largest |eigenvalue| of the recurrent matrix (tensor = its name)

METRIC_COLUMNS = ["step", "name", "layer", "tensor", "value"]
# ||dL/dh_t|| for every layer and time step, on recorded steps. value == 0.0 exactly means float32 underflow.
TIME_GRAD_COLUMNS = ["step", "layer", "t", "value"]
# Gate activations on recorded steps: mean over batch and units, and the share of entries < 0.1 / > 0.9.
GATE_COLUMNS = ["step", "layer", "gate", "t", "mean", "frac_low", "frac_high"]
# Non-finite ledger: one row per (step, tensor) that held NaN/Inf. time_step is set for hidden states.
EVENT_COLUMNS = ["step", "kind", "tensor", "layer", "time_step", "nan", "posinf", "neginf"]

EVENT_NONFINITE = "nonfinite"  # kind of an event row; `tensor` is e.g. "loss", "grad:rnn.weight_hh_l0",
# "rnn.weight_hh_l0" (the weight itself), "hidden" (with layer and time_step), "grad:hidden" (∂L/∂h_t, with layer
# and time_step), "grad_norm:rnn.weight_hh_l0" or "penalty" (finite entries whose float32 norm overflowed to +Inf)
EVENT_SKIPPED_STEP = "skipped_step"  # on_nonfinite=skip: the optimiser step was not taken


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=DTYPES[c]) for c in columns})


DTYPES = {
    "step": "int64",
    "name": "object",
    "layer": "Int64",
    "tensor": "object",
    "value": "float64",
    "t": "int64",
    "gate": "object",
    "mean": "float64",
    "frac_low": "float64",
    "frac_high": "float64",
    "kind": "object",
    "time_step": "Int64",
    "nan": "int64",
    "posinf": "int64",
    "neginf": "int64",
}


def frame(rows: list[tuple] | list[list], columns: list[str]) -> pd.DataFrame:
    """Build a table with the contract's dtypes from row tuples (None becomes <NA> or NaN)."""
    if not rows:
        return _empty(columns)
    df = pd.DataFrame.from_records(rows, columns=columns)
    return df.astype({c: DTYPES[c] for c in columns})


@dataclass
class StepRows:
    """Rows of one step, in this module's column order, before they reach a sink."""

    metrics: list[tuple] = field(default_factory=list)
    time_grads: list[tuple] = field(default_factory=list)
    gates: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)


@dataclass
class RunData:
    """Everything recorded for one run, as tidy tables (see the module docstring for the columns)."""

    metrics: pd.DataFrame = field(default_factory=lambda: _empty(METRIC_COLUMNS))
    time_grads: pd.DataFrame = field(default_factory=lambda: _empty(TIME_GRAD_COLUMNS))
    gates: pd.DataFrame = field(default_factory=lambda: _empty(GATE_COLUMNS))
    events: pd.DataFrame = field(default_factory=lambda: _empty(EVENT_COLUMNS))

    def series(self, name: str, layer: int | None = None, tensor: str = "") -> pd.Series:
        """One metric as a step-indexed Series (layer None selects the global / NA rows)."""
        m = self.metrics
        sel = (m["name"] == name) & (m["tensor"] == tensor)
        sel &= m["layer"].isna() if layer is None else (m["layer"] == layer)
        out = m.loc[sel.fillna(False).astype(bool), ["step", "value"]]
        return out.set_index("step")["value"].sort_index()
