"""The verdict of a run `watch` recorded in a user's own loop: what its recording can say without a task.

A lab run is judged against its task (a memoryless model's loss and score, the distance its dependency spans). A
watched model has none of that, so only what is harm whatever the task is called a problem: a value that went
NaN/Inf, or a loss that ran away (ten times the untrained model's). A gradient that fades going back in time is
a note: whether the model needed those steps depends on what it must remember, which `watch` cannot know.
Remedies are the lines to change in the user's script, since there is no `RunConfig` to edit.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .description import ModelDescription
from .diagnosis import EXPLODING, LOSS_FAR, NOTE, PROBLEM, VANISHING, Diagnosis, share_text
from .events import Callback, Fit, Step
from .gradflow import VANISHED
from .outcome import LossCourse, loss_course_of
from .remedies import CLIP_THRESHOLD, LR_FACTOR, Remedy


class WatchedEvidence(Callback):
    """What the watched rules read, kept while the run trains and bounded: the loss of every step (8 bytes a
    step), how many steps held NaN/Inf, and each lane's latest all-finite ‖∂L/∂h_t‖ profile. At the end it judges the
    run into its summary, so a store and an in-memory watch get the same verdict."""

    def __init__(self, description: ModelDescription):
        self.description = description
        self.steps = array("q")
        self.loss = array("d")
        self.bad_steps = 0  # steps whose loss or global gradient norm was NaN/Inf
        self.profiles: dict[int, tuple[int, list[float]]] = {}  # lane -> (step, profile in processing order)

    def after_step(self, fit: Fit, step: Step) -> None:
        self.steps.append(step.number)
        self.loss.append(step.values["loss"])
        self.bad_steps += not (math.isfinite(step.values["loss"]) and math.isfinite(step.values["pre"]))
        lanes: dict[int, list[tuple[int, float]]] = {}
        for _, lane, t, value in step.rows.time_grads:
            lanes.setdefault(lane, []).append((t, value))
        for lane, rows in lanes.items():
            profile = [value for _, value in sorted(rows)]
            if all(math.isfinite(v) for v in profile) and max(profile) > 0:
                self.profiles[lane] = (step.number, profile)

    def after_fit(self, fit: Fit) -> None:
        verdict = watched_verdict(self, fit.summary.status, fit.summary.first_nonfinite, self.description)
        fit.summary.diagnoses = [d.to_dict() for d in verdict.diagnoses]
        fit.summary.verdict = verdict.headline
        fit.summary.learned = None  # against what? a watched model has no task to have learned


@dataclass(frozen=True)
class WatchedVerdict:
    diagnoses: list[Diagnosis]  # problems first, then notes
    headline: str
    harm: str | None  # how exploding gradients harmed the run, in words; None: they did not


# --- remedies: lines of the user's script ---------------------------------------------------------------
def _clip() -> Remedy:
    return Remedy(f"Clip the gradient norm at {CLIP_THRESHOLD:g} (if you clip already: a lower threshold)", {},
                  f"w.step(loss)\ntorch.nn.utils.clip_grad_norm_(model.parameters(), {CLIP_THRESHOLD:g})\n"
                  "optimizer.step()")


def _lower_lr() -> Remedy:
    return Remedy(f"Lower the learning rate {1 / LR_FACTOR:g}-fold", {},
                  f"# once, after building the optimizer (not inside the loop)\nfor group in optimizer.param_groups:"
                  f"\n    group[\"lr\"] *= {LR_FACTOR:g}")


def _orthogonal(description: ModelDescription) -> Remedy:
    loops = "\n".join(f"for name, p in {_module(m.path)}.named_parameters():\n"
                      "    if name.startswith(\"weight_hh\"):\n        torch.nn.init.orthogonal_(p)"
                      for m in description.modules)
    return Remedy("If the model starts untrained: start its recurrent weights orthogonal (singular values 1)", {},
                  "# before training; a trained model would lose what it learned\n" + loops)


def _gated(description: ModelDescription) -> Remedy | None:
    """nn.LSTM for each nn.RNN, built from the old module's own settings (batch_first, dropout, … kept)."""
    vanilla = [m for m in description.modules if m.cell == "rnn"]
    if not vanilla:
        return None
    lines = ["# before building the optimizer (it must hold the new parameters); an LSTM's state is (h, c), so code",
             "# that passes h0 or reads h_n changes too"]
    for m in vanilla:
        lines.append(f"old = {_module(m.path)}")
        new = ("nn.LSTM(old.input_size, old.hidden_size, num_layers=old.num_layers, bias=old.bias, "
               "batch_first=old.batch_first, dropout=old.dropout, bidirectional=old.bidirectional)")
        if not m.path:
            lines.append(f"model = {new}")
        else:
            parent, _, name = m.path.rpartition(".")
            lines.append(f"setattr({_module(parent)}, {name!r}, {new})")
    return Remedy("Use nn.LSTM instead of nn.RNN: its cell state carries the gradient", {}, "\n".join(lines))


def _module(path: str) -> str:
    """Python that reaches the module at `path`, whatever its names hold (`layers.0`, a ModuleDict key)."""
    return f"model.get_submodule({path!r})" if path else "model"


def explosion_remedies(description: ModelDescription, at_initialisation: bool) -> tuple[Remedy, ...]:
    """The lab's order (`remedies.explosion_cures`): clip first, then smaller steps, then a gated cell; a hidden
    state that overflowed on the first step watch saw puts the initial weights first."""
    gated = _gated(description)
    first = (_orthogonal(description), _clip()) if at_initialisation else (_clip(),)
    return tuple(r for r in (*first, _lower_lr(), gated) if r is not None)


# --- rules ----------------------------------------------------------------------------------------------
def _lane_name(description: ModelDescription, lane) -> str | None:
    lanes = description.lanes()
    return lanes[lane].name if lane is not None and 0 <= lane < len(lanes) else None


def describe_first(first: dict, description: ModelDescription) -> str:
    """The first non-finite value in words: "the gradient of lstm.weight_ih_l1 (lstm layer 1)"."""
    tensor, t = first["tensor"], first.get("time_step")
    lane = _lane_name(description, first.get("lane", first.get("layer")))
    at = f" at time step {t}" if t is not None else ""
    of = f" in {lane}" if lane else ""
    if tensor == "loss":
        return "the loss"
    if tensor == "hidden":
        return f"the hidden state of {lane}{at}"
    if tensor == "grad:hidden":
        return f"the gradient of the hidden state of {lane}{at}"
    if tensor.startswith("grad:"):
        return f"the gradient of {tensor.removeprefix('grad:')}{of}{at}"
    if tensor.startswith("grad_norm:"):
        return (f"the gradient norm of {tensor.removeprefix('grad_norm:')}{of} (finite entries whose squares "
                "overflowed float32)")
    if tensor == "grad_norm":
        return "the global gradient norm"
    return f"the weights {tensor}{of}"


def _nonfinite(first: dict | None, bad_steps: int, description: ModelDescription) -> Diagnosis | None:
    if first is None:
        return None
    at_init = first["step"] == 1 and first["tensor"] == "hidden"  # before any update watch saw
    message = (f"A value became non-finite: at step {first['step']} {describe_first(first, description)} "
               f"({bad_steps} step{'s' * (bad_steps != 1)} with NaN/Inf values in total).")
    if first["step"] == 1:
        message += (" That was the first step watch saw, before any update: its weights are too large (an untrained "
                    "model's initialisation), or the inputs or the loss already held NaN/Inf (log(0), a division "
                    "by zero).")
    evidence = {k: first.get(k) for k in ("step", "tensor", "module", "parameter", "layer", "direction",
                                          "time_step")} | {"steps": bad_steps}
    return Diagnosis(EXPLODING, "nonfinite", message, evidence, explosion_remedies(description, at_init), PROBLEM)


def _loss_runaway(loss: LossCourse | None, description: ModelDescription) -> Diagnosis | None:
    """The loss ended ten times above where it began, at step 1 and over its first steps (a median, so one odd
    first batch neither raises nor lowers the bar). The lab's second loss rule (it fell, then rose back by half a
    memoryless model's loss) needs that baseline as its unit: measured against a noisy step-1 batch it called a
    tanh RNN's batch noise (16 sequences, T = 60) a setback, so watched runs do without it."""
    began = max(loss.first, loss.start) if loss is not None else 0.0
    if loss is None or began <= 0 or loss.end < LOSS_FAR * began:
        return None
    message = (f"The training loss ended at {loss.end:.3g}, {loss.end / began:.3g}x where it began ({loss.first:.3g} "
               f"at step 1, {loss.start:.3g} over its first steps): the updates threw the weights far from any "
               "solution.")
    evidence = {"first": loss.first, "start": loss.start, "best": loss.best, "best_step": loss.best_step,
                "end": loss.end, "far": LOSS_FAR}
    return Diagnosis(EXPLODING, "loss_divergence", message, evidence, explosion_remedies(description, False),
                     PROBLEM)


def lane_reach(profile: list[float]) -> tuple[float, int, int]:
    """(share of the largest ‖∂L/∂h_t‖ that reaches t = 1, the t where it is largest, steps back from there that
    stay at or above VANISHED of it), in the lane's processing order: the gradient flows from later to earlier
    steps, from wherever the loss reads the lane."""
    p = np.asarray(profile, dtype=float)
    entry = int(np.argmax(p))
    back = p[:entry + 1][::-1] / p[entry]
    below = np.flatnonzero(back < VANISHED)
    return float(p[0] / p[entry]), entry + 1, int(below[0]) - 1 if below.size else entry


def _fading(profiles: dict[int, tuple[int, list[float]]], description: ModelDescription) -> Diagnosis | None:
    faded = []
    for lane, (step, profile) in sorted(profiles.items()):
        share, entry, horizon = lane_reach(profile)
        if share < VANISHED:
            faded.append({"lane": _lane_name(description, lane), "step": step, "share": share, "largest_at": entry,
                          "horizon": horizon, "T": len(profile)})
    if not faded:
        return None
    parts = [f"in {f['lane']} (largest at t = {f['largest_at']} of {f['T']}, step {f['step']}) "
             + ("no gradient reaches t = 1 (float32 underflow)" if f["share"] == 0 else
                f"the gradient reaching t = 1 is {share_text(f['share'])} of the largest")
             + f", and it stays above {VANISHED:.0%} of the largest for {f['horizon']} "
             f"step{'s' * (f['horizon'] != 1)} back" for f in faded]
    message = ("The gradient fades going back in time: " + "; ".join(parts) + ". Such a layer learns dependencies "
               "of about that many steps at most; whether that harms your model depends on how far back it must "
               "remember, which watch cannot know (a lab task knows, and calls it a problem when the model did "
               "not learn).")
    return Diagnosis(VANISHING, "time_decay", message, {"lanes": faded, "vanished": VANISHED}, (), NOTE)


def watched_verdict(evidence: WatchedEvidence, status: str, first_nonfinite: dict | None,
                    description: ModelDescription) -> WatchedVerdict:
    steps = np.frombuffer(evidence.steps, dtype=np.int64) if len(evidence.steps) else np.zeros(0, dtype=np.int64)
    loss = pd.Series(np.asarray(evidence.loss, dtype=float), index=steps)
    course = loss_course_of(loss, None)
    found, harm = [], None
    if (d := _nonfinite(first_nonfinite, max(evidence.bad_steps, 1), description)) is not None:
        found.append(d)
        harm = "a value went non-finite"
    elif (ran_away := _loss_runaway(course, description)) is not None:
        found.append(ran_away)
        harm = "the loss ran away"
    if (note := _fading(evidence.profiles, description)) is not None:
        found.append(note)
    return WatchedVerdict(found, _headline(found, harm, course, status, len(evidence.steps)), harm)


def _headline(found: list[Diagnosis], harm: str | None, loss: LossCourse | None, status: str, steps: int) -> str:
    notes = sum(d.severity == NOTE for d in found)
    noted = f"; {notes} note{'s' * (notes != 1)}" if notes else ""
    if harm is not None:
        return f"Problem: exploding gradients ({harm}){noted}."
    stopped = f"The script stopped (an exception) after step {steps}. " if status == "stopped" else ""
    if not steps:
        return f"{stopped}Nothing to judge: w.step(loss) was never called."
    if loss is None:
        return f"{stopped}No exploding problem, but no finite loss was recorded to judge the run by{noted}."
    course = f"the loss ended at {loss.end:.3g}"
    if loss.first > 0:
        ratio = loss.end / loss.first
        course = (f"the loss went from {loss.first:.3g} at step 1 to {loss.end:.3g} at the end ("
                  + (f"{share_text(ratio)} of its start)" if ratio < 1 else f"{ratio:.2g} times its start)"))
    return (f"{stopped}No exploding problem: {course}. Whether it learned what it should, watch cannot judge "
            f"without a task{noted}.")
