"""Guided lessons: small runs that each show one cause or cure of exploding or vanishing gradients live,
within seconds on a shared CPU, and the check that a run really showed it.

Contrasted variants differ only in what the lesson is about. The vanishing lessons train with SGD, which shows
vanishing gradients as they are; Adam rescales tiny gradients and hides them (lesson 10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from . import rundata as rd
from .config import RunConfig, quoted
from .gradflow import gradient_reach
from .model import task_of
from .rundata import RunData
from .summary import RunSummary

# Held-out accuracy on the 512 agreement sentences. Chance is 50 % with a standard deviation of 2.2 %, so
# FORGOT sits far above a guessing model's noise and far below one that uses the subject.
FORGOT = 0.6
LEARNED = 0.9
# A thousand times the clipping threshold of lesson 2: no ordinary batch produces a gradient this large.
EXPLODED = 1e3
# Lesson 10's text: the gradient reaching the subject starts below 1/1000 of the one at the verb.
ADAM_HIDES = 1e-3


@dataclass(frozen=True)
class Variant:
    """One run of a lesson; `expect` is the sentence that tells the student what to look for."""

    label: str
    config: RunConfig
    expect: str
    pace: float | None = None  # steps per second the dashboard trains it at, so a fast effect can be watched


@dataclass(frozen=True)
class Lesson:
    """A page of the lab: a short explanation and the runs (variants) that show it."""

    slug: str
    number: int
    title: str
    text: str
    variants: tuple[Variant, ...]
    # A lesson with several variants is one page that overlays them: these quantities (names of
    # `compare_charts.QUANTITIES`), then the gradient through time at the first and last recorded step
    # (`profile_ends`) or at the latest.
    compare: tuple[str, ...] = (rd.LOSS, rd.HELDOUT_METRIC)
    profile_ends: bool = False


Check = Callable[[RunSummary, RunData, RunConfig], tuple[bool, str]]


# --- checks: each says in numbers whether one run showed its effect, and whether its verdict says so --------
def _num(x: float | None) -> str:
    return "none" if x is None else f"{x:.3g}"


def _diagnoses(summary: RunSummary, severity: str, kind: str | None = None) -> list[dict]:
    return [d for d in summary.diagnoses if d.get("severity") == severity and kind in (None, d["kind"])]


def _rules(diagnoses: list[dict]) -> list[str]:
    return [d["rule"] for d in diagnoses]


def _no_problem(summary: RunSummary) -> tuple[bool, str]:
    """A cure run: the verdict finds no problem (notes are fine)."""
    problems = _rules(_diagnoses(summary, "problem"))
    return not problems, f"problems {problems} (needs none)"


def _first_reach(data: RunData, config: RunConfig) -> float | None:
    """The share of the gradient at the loss that reached the subject at the first recorded step."""
    reach = gradient_reach(data.time_grads, task_of(config).dependency())
    return None if reach is None else reach.first_ratio


def _diverged(summary: RunSummary, data: RunData, config: RunConfig) -> tuple[bool, str]:
    """Exploded through the updates: finite at step 1, huge gradients, then a located NaN/Inf, diagnosed."""
    where = summary.first_nonfinite
    problems = _rules(_diagnoses(summary, "problem", "exploding"))
    ok = (summary.status == "diverged" and where is not None and where["step"] > 1
          and (summary.max_grad_norm or 0.0) >= EXPLODED and "nonfinite" in problems)
    return ok, (f"status {summary.status}, largest gradient norm {_num(summary.max_grad_norm)} "
                f"(needs ≥ {EXPLODED:g}), first non-finite {where}, exploding problems {problems}")


def _stable(summary: RunSummary, data: RunData, config: RunConfig) -> tuple[bool, str]:
    """Completed with a finite loss and no NaN/Inf anywhere, clipping had to act, and it is only a note."""
    events = int((data.events["kind"] == rd.EVENT_NONFINITE).sum())
    clean, problems = _no_problem(summary)
    noted = "clip_spikes" in _rules(_diagnoses(summary, "note", "exploding"))
    ok = (summary.status == "completed" and summary.final_loss is not None and math.isfinite(summary.final_loss)
          and events == 0 and summary.clip_rate > 0 and clean and noted)
    return ok, (f"status {summary.status}, final loss {_num(summary.final_loss)}, {events} non-finite events, "
                f"clip rate {summary.clip_rate:.2f}, {problems}, clipping noted: {noted}")


def _forgot(summary: RunSummary, data: RunData, config: RunConfig) -> tuple[bool, str]:
    """At chance, and the verdict is a vanishing problem: the gradient does not reach the subject (Bengio et al.
    1994), and nothing else is blamed."""
    acc = summary.final_metric
    vanishing = _rules(_diagnoses(summary, "problem", "vanishing"))
    exploding = _rules(_diagnoses(summary, "problem", "exploding"))
    ok = acc is not None and acc <= FORGOT and "time_decay" in vanishing and not exploding
    return ok, (f"held-out accuracy {_num(acc)} (needs ≤ {FORGOT}), vanishing problems {vanishing} (needs "
                f"time_decay), exploding problems {exploding} (needs none)")


def _learned(summary: RunSummary, data: RunData, config: RunConfig) -> tuple[bool, str]:
    acc = summary.final_metric
    clean, problems = _no_problem(summary)
    ok = acc is not None and acc >= LEARNED and clean
    return ok, f"held-out accuracy {_num(acc)} (needs ≥ {LEARNED}), {problems}"


def _learned_despite_vanishing(summary: RunSummary, data: RunData, config: RunConfig) -> tuple[bool, str]:
    """Learned although the untrained network's gradient to the subject had vanished: the optimiser hid it, and
    the verdict says so in a note."""
    ok, reason = _learned(summary, data, config)
    start = _first_reach(data, config)
    noted = "time_decay" in _rules(_diagnoses(summary, "note", "vanishing"))
    return (ok and start is not None and start < ADAM_HIDES and noted,
            f"{reason}; at step 1 {_num(start)} of the gradient at the verb reached the subject (needs < "
            f"{ADAM_HIDES:g}), vanishing noted: {noted}")


def _recurrent_norms(data: RunData) -> tuple[float, float]:
    """‖W_hh‖ after the first and the last step."""
    s = data.series(rd.WEIGHT_NORM, layer=0, tensor="rnn.weight_hh_l0")
    return float(s.iloc[0]), float(s.iloc[-1])


def _weights_grow(summary: RunSummary, data: RunData, config: RunConfig) -> tuple[bool, str]:
    first, last = _recurrent_norms(data)
    penalty = float(data.series(rd.PENALTY).iloc[-1])
    clean, problems = _no_problem(summary)
    noted = "weight_growth" in _rules(_diagnoses(summary, "note", "exploding"))
    ok = last > first and penalty == 0 and (summary.final_metric or 0.0) >= LEARNED and clean and noted
    return ok, (f"‖W_hh‖ {first:.3g} → {last:.3g} (needs to grow), penalty {penalty:.3g}, "
                f"held-out accuracy {_num(summary.final_metric)}, {problems}, growth noted: {noted}")


def _weights_shrink(summary: RunSummary, data: RunData, config: RunConfig) -> tuple[bool, str]:
    first, last = _recurrent_norms(data)
    penalty = float(data.series(rd.PENALTY).iloc[-1])
    clean, problems = _no_problem(summary)
    ok = last < first and penalty > 0 and (summary.final_metric or 0.0) >= LEARNED and clean
    return ok, (f"‖W_hh‖ {first:.3g} → {last:.3g} (needs to shrink), penalty {penalty:.3g} (needs > 0), "
                f"held-out accuracy {_num(summary.final_metric)} (needs ≥ {LEARNED}), {problems}")


# A variant checked by one of these shows a failure; the others show a cure (or a healthy run).
FAILURES = (_diverged, _forgot)


# --- the runs ---------------------------------------------------------------------------------------------
# A linear RNN whose W_hh is 1.3 × an orthogonal matrix multiplies ∂L/∂h_t by exactly 1.3 per step back in
# time; its forward pass is finite at the start, so only the updates can blow it up, and clipping stops that.
# Recorded at every step: lesson 1 is over within 4 steps, and a class scrubs through each of them.
EXPLODING = RunConfig(activation="linear", init="orthogonal", init_scale=1.3, clip="none", record_every=1)
# "the cat(s)" + 15 fillers → was/were: the tanh RNN stays at chance for 1500 SGD steps (measured), while an
# LSTM learns it in about 460; hidden 32 keeps an 800-step run at a few seconds.
FAR = RunConfig(hidden_size=32, seq_len=15, steps=800)
# 5 fillers: short enough for a tanh RNN to learn in 300 steps, so what fails here fails for another reason.
NEAR = RunConfig(hidden_size=32, seq_len=5)
# The IRNN needs small steps: with lr 0.1 and momentum 0.9 its ReLU units die and its gradient underflows to 0,
# with lr 0.01 and no momentum it learns (measured).
SMALL_STEPS = FAR.replace(lr=0.01, momentum=0.0)

_CHECKS: dict[str, tuple[Check, ...]] = {}


def _lesson(slug: str, number: int, title: str, text: str, *runs: tuple[Variant, Check], **page) -> Lesson:
    """A lesson whose every variant comes with the check of its expected effect; `page`: how its page compares
    the variants (`Lesson.compare`, `Lesson.profile_ends`)."""
    _CHECKS[slug] = tuple(check for _, check in runs)
    return Lesson(slug, number, title, text, tuple(variant for variant, _ in runs), **page)


LESSONS: tuple[Lesson, ...] = (
    _lesson(
        "exploding-nan", 1, "Large recurrent weights explode into NaN",
        "This RNN is linear and its recurrent matrix starts at 1.3 times an orthogonal matrix, so each step back "
        "in time multiplies the gradient by 1.3 (Pascanu et al. 2013). Without clipping, one large gradient step "
        "makes the weights larger, which makes the next gradient larger still. Watch the gradient-norm chart "
        "climb by orders of magnitude until the run stops; the red mark and the diagnosis name the step, tensor "
        "and time step where NaN/Inf first appeared.",
        # It explodes within 4 steps: trained at one step a second in the dashboard, a class sees each step's
        # gradient through time (and scrubs back to any of them); the numbers are the run's own.
        (Variant("no clipping", EXPLODING,
                 "The gradient norm leaps by orders of magnitude within a few steps, and the run stops as diverged "
                 "at the first NaN/Inf, located on the charts; the diagnosis reports an exploding-gradient "
                 "problem and offers clipping first.", pace=1.0), _diverged),
    ),
    _lesson(
        "clipping", 2, "Clipping the gradient norm prevents the blow-up",
        "The same network and seed as lesson 1, but whenever the gradient's norm exceeds 1 it is scaled down to "
        "1 (Pascanu et al. 2013). Clipping keeps the gradient's direction and caps the step, so one huge gradient "
        "can no longer throw the weights into overflow. On the gradient-norm chart the pre-clip norm still jumps "
        "while the post-clip norm never exceeds 1, and the loss stays finite.",
        (Variant("clip norm at 1", EXPLODING.replace(clip="norm", clip_threshold=1.0),
                 "The run completes without a single NaN/Inf while clipping fires on some of the steps; the "
                 "diagnosis finds no problem, only a note that clipping capped the spikes."), _stable),
    ),
    _lesson(
        "tanh-forgets", 3, "A tanh RNN forgets the subject",
        "The model reads \"the cat\" or \"the cats\", then 15 filler words, and must choose was or were (Linzen "
        "et al. 2016). Each step back in time multiplies the gradient by the recurrent Jacobian, and with "
        "PyTorch's small default weights that roughly halves it, so the error signal from the verb shrinks "
        "exponentially before it reaches the subject (Bengio et al. 1994). On the gradient-through-time chart, "
        "$\\lVert \\partial L / \\partial h_t \\rVert$ at the start of the sentence is thousands of times smaller than "
        "at the verb, and the accuracy "
        "chart stays at chance (50 %).",
        (Variant("tanh RNN", FAR,
                 "Accuracy stays near 50 % for all 800 steps, and the diagnosis reports a vanishing-gradient "
                 "problem: far less than 1 % of the gradient at the verb reaches the subject."), _forgot),
    ),
    _lesson(
        "lstm-remembers", 4, "An LSTM remembers it",
        "Same sentences, same training as lesson 3; only the cell changes. The LSTM keeps a cell state "
        "$c_t = f_t \\odot c_{t-1} + i_t \\odot g_t$, so the gradient flows back through the forget gate $f_t$ instead "
        "of through a "
        "squashing matrix product, and the gate learns to stay open where the subject matters (Hochreiter & "
        "Schmidhuber 1997; Gers et al. 2000). Watch the accuracy chart leave 50 % after a few hundred steps "
        "while the gradient-through-time chart flattens. Then look inside it on the Gates page and move "
        "\"Weights after training step\" from 0 to the last step: the right verb goes from a coin flip to "
        "certain, and the forget gate of the unit that carries number rises, so more of its cell state survives "
        "the filler words.",
        (Variant("LSTM", FAR.replace(cell="lstm"),
                 "Accuracy climbs from 50 % to about 100 % within the 800 steps, at the distance where the tanh RNN "
                 "stayed at chance; no problem is diagnosed, and a note says how little of the gradient reached "
                 "the subject at first."), _learned),
    ),
    _lesson(
        "gru-remembers", 5, "A GRU remembers it",
        "The GRU mixes old and new state, $h_t = z_t \\odot h_{t-1} + (1 - z_t) \\odot n_t$ (Cho et al. 2014): where "
        "the update "
        "gate $z_t$ is near 1, the state and its gradient pass through a step almost unchanged. Its update gate "
        "starts biased open (bias 2), as an LSTM's forget gate does, so the subject's trace survives the 15 "
        "filler words until the gate has learned to keep it (Jozefowicz et al. 2015; Tallec & Ollivier 2018). "
        "Compare its accuracy and gradient-through-time charts with lesson 3's, then look at the update gate on "
        "the Gates page.",
        (Variant("GRU", FAR.replace(cell="gru", forget_bias=2.0),
                 "Accuracy climbs from 50 % to about 100 % within the 800 steps, at the distance where the tanh RNN "
                 "stayed at chance; no problem is diagnosed."), _learned),
    ),
    _lesson(
        "irnn", 6, "Identity initialisation with ReLU (IRNN)",
        "Le et al. (2015) start a ReLU RNN with the identity as its recurrent matrix: each step first copies the "
        "state forward, so on the active units the gradient neither shrinks nor grows. Both runs use plain SGD "
        "with a small learning rate (0.01, no momentum), since larger steps kill the ReLU units; only the "
        "activation and the initialisation differ. On the gradient-through-time chart the tanh RNN's gradient "
        "dies before the subject while the IRNN's reaches it, and only the IRNN's accuracy leaves 50 %.",
        (Variant("tanh, default init", SMALL_STEPS,
                 "Accuracy stays near 50 %, and the diagnosis reports a vanishing-gradient problem whose first "
                 "remedy is the IRNN."), _forgot),
        (Variant("IRNN: ReLU, identity init", SMALL_STEPS.replace(activation="relu", init="identity"),
                 "Accuracy climbs to about 100 % within the 800 steps; no problem is diagnosed."), _learned),
        profile_ends=True,
    ),
    _lesson(
        "activations", 7, "Sigmoid, tanh or ReLU",
        "Three RNNs with PyTorch's default initialisation that differ only in the activation, at a short distance "
        "of 5 filler words. One step back scales the gradient by at most $\\sigma_{\\max}(W_{hh})$ times the "
        "activation's "
        "largest slope (Pascanu et al. 2013): the sigmoid's slope is at most 1/4, ReLU's is 1 but 0 on inactive "
        "units, and tanh's is 1 around 0. Compare the gradient-through-time charts and the accuracy: with small "
        "default weights only tanh learns; ReLU needs the identity initialisation of lesson 6.",
        (Variant("sigmoid", NEAR.replace(activation="sigmoid"),
                 "Accuracy stays near 50 %: the gradient reaching the subject vanishes even over 5 words, a "
                 "vanishing-gradient problem."), _forgot),
        (Variant("tanh", NEAR, "Accuracy climbs to about 100 % within 300 steps; no problem is diagnosed."),
         _learned),
        (Variant("ReLU", NEAR.replace(activation="relu"),
                 "Accuracy stays near 50 %: the inactive units cut the gradient and it vanishes too, a "
                 "vanishing-gradient problem."), _forgot),
        compare=(rd.HELDOUT_METRIC, rd.HIDDEN_SATURATION),
    ),
    _lesson(
        "weight-decay", 8, "Weight decay keeps the weights small",
        "An L2 penalty $\\frac{\\lambda}{2}\\lVert W \\rVert^2$ adds $\\lambda W$ to every weight's gradient, pulling "
        "the weights toward 0 at every step "
        "(Krogh & Hertz 1992). Gradients can only explode once the largest singular value of $W_{hh}$ passes "
        "$1/\\gamma$ "
        "(Pascanu et al. 2013), so small weights guard against explosions. Both runs learn the short agreement task; "
        "on the weight-norm "
        "chart the recurrent weights grow without the penalty and shrink below their start with $\\lambda = 0.005$. A "
        "much larger $\\lambda$ would shrink them until the gradient vanishes.",
        (Variant("no penalty", NEAR, "The recurrent weight norm grows while the model learns; the diagnosis "
                                     "notes the growth and finds no problem."), _weights_grow),
        (Variant("λ = 0.005", NEAR.replace(weight_decay=0.005),
                 "The model still learns, and the recurrent weight norm ends below where it started; no problem "
                 "is diagnosed."),
         _weights_shrink),
        compare=(rd.WEIGHT_NORM, rd.HELDOUT_METRIC, rd.PENALTY),
    ),
    _lesson(
        "forget-bias", 9, "LSTM forget-gate bias: 0 or 1",
        "An LSTM's memory is kept by its forget gate $f_t = \\sigma(W_f x_t + U_f h_{t-1} + b_f)$. With $b_f = 0$ the "
        "gate "
        "starts near 0.5 and halves the cell state, and its gradient, at every step; with $b_f = 1$ it starts "
        "near 0.73, and about 100 times more of the gradient reaches the subject 16 steps back (Gers et al. "
        "2000; Jozefowicz et al. 2015). Compare the gradient-through-time charts and the forget gate on the "
        "Gates page: only bias 1 learns within the 800 steps, and its over-training chart shows why — with "
        "bias 0 the forget gates stay near 0.5 from the first step to the last.",
        (Variant("forget bias 0", FAR.replace(cell="lstm", forget_bias=0.0),
                 "Accuracy stays near 50 %, and the diagnosis reports a vanishing-gradient problem whose first "
                 "remedy is forget bias 1."), _forgot),
        (Variant("forget bias 1", FAR.replace(cell="lstm", forget_bias=1.0),
                 "Accuracy climbs to about 100 % within the 800 steps; no problem is diagnosed."), _learned),
        profile_ends=True,
    ),
    _lesson(
        "adam-hides-vanishing", 10, "Adam hides vanishing gradients",
        "This is the tanh RNN of lesson 3 trained with Adam instead of SGD. At the first step both runs have the "
        "same gradients, and the one reaching the subject is just as vanished; but Adam divides each weight's "
        "step by a running average of that weight's own gradient size (Kingma & Ba 2015), so even a tiny "
        "gradient moves its weight by about the learning rate. A model that learns therefore does not prove that "
        "its gradient flows: compare the gradient-through-time charts of the two runs at their first steps.",
        (Variant("Adam", FAR.replace(optimizer="adam", lr=0.001),
                 "Accuracy climbs to about 100 % although the gradient reaching the subject starts below 1/1000 "
                 "of the one at the verb: no problem, and a note says the gradient had vanished."),
         _learned_despite_vanishing),
        (Variant("SGD", FAR, "Accuracy stays near 50 %: the same vanished gradient, taken at face value, is a "
                             "vanishing-gradient problem."), _forgot),
        compare=(rd.HELDOUT_METRIC, rd.GRAD_NORM_PRE_CLIP), profile_ends=True,
    ),
)

def lesson(slug_or_number: str | int) -> Lesson:
    """The lesson with this slug (as share links carry it) or number (an int, or its digits from a URL)."""
    key = slug_or_number
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    for item in LESSONS:
        if key in (item.slug, item.number) and not isinstance(key, bool):
            return item
    allowed = ", ".join(f"{item.number} ({item.slug})" for item in LESSONS)
    raise ValueError(f"unknown lesson {quoted(slug_or_number)}; allowed: {allowed}")


def variant_index(lesson: Lesson, raw: str | int | None) -> int:
    """The variant a link names (0-based; absent means the first), or a ValueError saying what is allowed."""
    if raw is None:
        return 0
    text = str(raw).strip()
    if not (text.isdigit() and int(text) < len(lesson.variants)):
        raise ValueError(f"lesson {lesson.number} has no variant {quoted(raw)}; allowed: "
                         + ", ".join(f"{k} ({v.label})" for k, v in enumerate(lesson.variants)))
    return int(text)


def shows_effect(lesson: Lesson, variant_index: int, summary: RunSummary, data: RunData) -> tuple[bool, str]:
    """Whether a finished, diagnosed run of this variant showed what `expect` promises, with the numbers why."""
    return _CHECKS[lesson.slug][variant_index](summary, data, lesson.variants[variant_index].config)


def shows_failure(lesson: Lesson, variant_index: int) -> bool:
    """Whether this variant is the lesson's failing run (it diverges or forgets), not its cure."""
    return _CHECKS[lesson.slug][variant_index] in FAILURES


def known_outcomes() -> tuple[dict[RunConfig, int], set[RunConfig]]:
    """Every lesson variant's config: the cures (with the number of the first lesson showing each) and the
    failures, so remedies can lead to the one and away from the other."""
    cures: dict[RunConfig, int] = {}
    failures: set[RunConfig] = set()
    for item in LESSONS:
        for i, variant in enumerate(item.variants):
            if shows_failure(item, i):
                failures.add(variant.config)
            else:
                cures.setdefault(variant.config, item.number)
    return cures, failures


def lesson_paces() -> dict[RunConfig, float]:
    """The lesson variants the dashboard trains slowly enough to watch: config -> steps per second."""
    return {variant.config: variant.pace for item in LESSONS for variant in item.variants if variant.pace}


def lesson_configs() -> frozenset[RunConfig]:
    """Every lesson variant's config: their runs are pinned once trained, so a class's links never train twice."""
    return frozenset(variant.config for item in LESSONS for variant in item.variants)
