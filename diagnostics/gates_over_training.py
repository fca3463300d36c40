"""The Gates page's "over training" view: the same sentence read by a run's model at each kept checkpoint.

One frame row per (checkpoint step, series): how sure the model is of the right verb for "the cat … was" and
"the cats … were", and what its gates do with the subject — the forget gate (LSTM) or update gate (GRU, 1 =
keep) on the words after the subject, averaged over the layer's units and for the one unit that carries number
best at the last checkpoint, and the input gate at the subject (how much of the word is written). Before
learning, both verbs are near 50 % and the gates sit near their initial 0.5; after, the carrying unit keeps
what it wrote. A task without a singular/plural pair gets the gate means over the whole sequence only.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import torch

from .chartdata import nearest_recorded
from .config import quoted
from .inspect_gates import VERSIONS, agreement_predictions, difference_frame, draw_probes, top_units
from .model import task_of
from .palette import colour
from .runner import load_trained_model
from .store import Store
from .tasks import AgreementTask, Task

KEEP_GATE = {"lstm": "forget", "gru": "update"}  # the gate whose 1 means "keep the previous state"
WRITE_GATE = {"lstm": "input"}  # the gate whose 1 means "write the new word"


def step_label(step: int, last: int) -> str:
    """How the checkpoint picker names a step."""
    if step == 0:
        return "0 — initial weights, before training"
    return f"{step} — last kept step" if step == last else str(step)


def chosen_step(steps: list[int], requested: object) -> tuple[int, str | None]:
    """The kept step a link's `step` names, else the last kept one, with a note saying why when the link's step
    was not usable."""
    last = steps[-1]
    if requested is None or str(requested).strip() == "":
        return last, None
    text = str(requested).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 12):
        return last, (f"step {quoted(requested)} from the link is not a training step: steps are whole numbers "
                      f"from 0; showing the last kept step {last}.")
    step = int(text)
    if step in steps:
        return step, None
    nearest = nearest_recorded(steps, step)
    return nearest, (f"This run kept no weights at step {step}; it keeps them at steps "
                     f"{', '.join(map(str, steps))}. Showing the nearest, step {nearest}.")


def stored_training_frame(store: Store, run_id: int, config, seed: int, layer: int) -> pd.DataFrame:
    """`training_frame` of every checkpoint the run kept (its config: a `RunConfig`); a StoreError when the run
    was deleted meanwhile (on the Runs page, or by the store's quota)."""
    models = {}
    for step in store.checkpoint_steps(run_id):
        loaded = load_trained_model(store, run_id, step)
        if loaded is not None:
            models[step] = loaded[0]
    if not models:
        return pd.DataFrame(columns=["step", "series", "value"])
    return training_frame(models, task_of(config), config.cell, seed, layer)


def training_frame(models: dict[int, torch.nn.Module], task: Task, cell: str, seed: int,
                   layer: int) -> pd.DataFrame:
    """step, series, value for every checkpoint in `models` (step → model with those weights)."""
    steps = sorted(models)
    probes = {step: draw_probes(models[step], task, seed) for step in steps}
    agreement = isinstance(task, AgreementTask)
    carrier = _carrying_unit(probes[steps[-1]], layer) if agreement else None
    after = slice(task.subject_position + 1, None) if agreement else slice(None)
    rows = []
    for step in steps:
        if agreement:
            for _, row in agreement_predictions(probes[step]).iterrows():
                rows.append((step, f"P(right verb), {row['sentence']}", float(row[f"P({row['expected']})"])))
        gates = [probe.trace.gates[layer] for probe in probes[step].values()]
        if cell in KEEP_GATE:
            keep = _stack(gates, KEEP_GATE[cell], after)
            rows.append((step, f"{KEEP_GATE[cell]} gate after the subject, all units", _mean(keep)))
            if carrier is not None:
                rows.append((step, f"{KEEP_GATE[cell]} gate after the subject, unit {carrier}",
                             _mean(keep[..., carrier])))
        if cell in WRITE_GATE and agreement:
            write = _stack(gates, WRITE_GATE[cell], slice(task.subject_position, task.subject_position + 1))
            rows.append((step, f"{WRITE_GATE[cell]} gate at the subject, all units", _mean(write)))
            rows.append((step, f"{WRITE_GATE[cell]} gate at the subject, unit {carrier}", _mean(write[..., carrier])))
    return pd.DataFrame(rows, columns=["step", "series", "value"])


def _carrying_unit(probes, layer: int) -> int:
    """The unit whose state differs most between the two sentences at the last step (the cell state of an
    LSTM, where it keeps number), as the page's "which units carry number" ranking names it."""
    diff = difference_frame(probes[VERSIONS[0]], probes[VERSIONS[1]], layer)
    top = top_units(diff, 1)
    return int(top.iloc[-1]["unit"]) if len(top) else 0


def _stack(gates: list[dict], name: str, steps: slice) -> torch.Tensor:
    """One gate's activations of every probe over the chosen time steps: (probes, steps, units)."""
    return torch.stack([torch.stack([g[0] for g in layer_gates[name][steps]]) for layer_gates in gates])


def _mean(values: torch.Tensor) -> float:
    return float(values.double().mean())


TRAINING_CHART_NOTE = ("Each point: the same sentence read by the weights kept at that step; dotted rule: the step "
                       "shown above.")
AGREEMENT_NOTE = ("Gates: the mean activation of all units or (dashed) of the unit that carries number best at the "
                  "last kept step. The right verb's probability leaves 50 % when the network learns to carry the "
                  "subject's number to the verb: watch what the carrying unit's gates do then.")
OTHER_TASK_NOTE = "Gates: the mean activation of the layer's units over the whole sequence."


def training_chart(df: pd.DataFrame, chosen: int) -> alt.LayerChart:
    """The series of `training_frame` over the checkpoint steps (a symlog axis: 0 and 100 000 both fit), with a
    rule at the checkpoint the page shows; the notes say how to read it. Values that are not finite (a diverged
    run's last weights) are left out."""
    df = df[np.isfinite(df["value"].to_numpy(dtype=float))]  # a diverged checkpoint's NaN: no point, valid JSON
    names = list(dict.fromkeys(df["series"]))
    scale = alt.Scale(domain=names, range=[_series_colour(n) for n in names])
    dash = alt.Scale(domain=names, range=[[6, 3] if ", unit " in n else [1, 0] for n in names])
    legend = alt.Legend(title=None, symbolType="stroke", symbolStrokeWidth=2, labelLimit=320)
    x = alt.X("step:Q", title="training step (symmetric log scale; 0 = initial weights)",
              scale=alt.Scale(type="symlog"), axis=alt.Axis(values=sorted(df["step"].unique().tolist())))
    lines = alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=30, filled=True)).encode(
        x=x, y=alt.Y("value:Q", title="probability / gate activation (0–1)", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("series:N", scale=scale, legend=legend),
        strokeDash=alt.StrokeDash("series:N", scale=dash, legend=legend),
        tooltip=[alt.Tooltip("step:Q", title="training step"), alt.Tooltip("series:N"),
                 alt.Tooltip("value:Q", format=".3f")])
    marker = alt.Chart(pd.DataFrame({"step": [chosen]})).mark_rule(color="#444", strokeDash=[2, 2]).encode(x="step:Q")
    return alt.layer(lines, marker).properties(title=alt.Title("The same sentence over training"), height=280)


def _series_colour(name: str) -> str:
    if name.startswith("P(right verb)"):
        return colour("readout") if name.endswith(VERSIONS[0]) else colour("hidden units")
    return colour(name)
