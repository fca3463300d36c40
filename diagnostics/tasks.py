"""Synthetic long-range-dependency tasks, generated on the fly from a seeded torch.Generator.

Each task fixes how far back the model must remember something (``seq_len``) and knows the score a
memoryless model gets (``baseline`` for the metric, ``baseline_loss`` for the loss), so a curve that
stays on that line means the gradient never carried the dependency across time.

Shapes
- ``input_kind == "tokens"``: inputs are int64 ids of shape (B, T); the model one-hot encodes them
  into ``input_size`` channels.
- ``input_kind == "float"``: inputs are float32 of shape (B, T, input_size).
- ``last_step_only``: the model's outputs are (B, output_size) from the last step; otherwise
  (B, T, output_size) from every step. ``T == task.total_steps()``.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Dependency:
    """Where the long-range dependency of a task lies, so a verdict can ask whether the gradient reaches it.

    ``source`` is the (1-based) time step whose input the answer needs, ``target`` the step where the loss that
    needs it is taken; ``reference`` is the held-out metric of a model that ignores the dependency (it may still
    use everything nearer than ``source``)."""

    source: int
    target: int
    source_name: str
    target_name: str
    reference: float

    @property
    def distance(self) -> int:
        """Recurrent steps the gradient must travel back from the loss to the input it needs."""
        return self.target - self.source


class Task(ABC):
    """What the trainer and dashboard need from a task, so they never branch on its name."""

    name: str
    input_kind: str
    input_size: int
    output_size: int
    last_step_only: bool
    metric_name: str
    higher_is_better: bool
    loss_name: str
    baseline: float
    baseline_loss: float
    baseline_label: str
    perfect: float  # the metric of a model that is always right
    min_seq_len = 1

    def __init__(self, seq_len: int):
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < self.min_seq_len:
            raise ValueError(
                f"seq_len must be an integer >= {self.min_seq_len} for task '{self.name}', got {seq_len!r}"
            )
        self.seq_len = seq_len

    @abstractmethod
    def total_steps(self) -> int:
        """The sequence length T the model actually sees (seq_len plus the task's fixed parts)."""

    @abstractmethod
    def dependency(self) -> Dependency:
        """The input the task's answer depends on most distantly, and where that answer is scored."""

    @abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A fresh batch (inputs, targets); the same generator state gives the same batch."""

    @abstractmethod
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The scalar training loss, a mean over the batch and the scored steps."""

    @abstractmethod
    def metric(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The scalar score people read (accuracy or MSE), comparable to ``baseline``."""

    @abstractmethod
    def decode(self, inputs_row: Tensor) -> str:
        """One example as text, so a person can see what the model was asked."""


# Subject-verb number agreement (Linzen, Dupoux & Goldberg 2016): the verb's number depends on a noun
# `seq_len + 1` tokens back, and attractor nouns of the opposite number sit in between.
NOUNS = [
    ("cat", "cats"),
    ("dog", "dogs"),
    ("bird", "birds"),
    ("horse", "horses"),
    ("farmer", "farmers"),
    ("teacher", "teachers"),
    ("child", "children"),
    ("mouse", "mice"),
]
# Words that say nothing about number ("fish" is both), so only the subject and attractors do.
FILLERS = [
    "had", "enjoyed", "eating", "fish", ",", "and", "very", "quietly", "that", "near",
    "the", "often", "seemed", "happy", "after", "running", "outside", "with", "really", "always",
]


class AgreementTask(Task):
    """Predict "was" or "were" after a long filler: the first noun decides, not the last one."""

    name = "agreement"
    input_kind = "tokens"
    output_size = 2  # 0 = "was" (singular subject), 1 = "were" (plural subject)
    last_step_only = True
    metric_name = "accuracy"
    higher_is_better = True
    loss_name = "cross-entropy"
    baseline = 0.5
    baseline_loss = math.log(2)
    baseline_label = "chance (50 %)"
    perfect = 1.0
    subject_position = 1  # index of the subject noun in every sequence; index 0 is "the"

    def __init__(self, seq_len: int, attractor_rate: float = 0.0):
        super().__init__(seq_len)
        if not 0.0 <= attractor_rate <= 1.0:
            raise ValueError(f"attractor_rate must be a number in [0, 1], got {attractor_rate!r}")
        self.attractor_rate = float(attractor_rate)
        # Layout: <pad>, the, singular nouns, plural nouns, fillers other than "the".
        self.vocab = ["<pad>", "the"] + [s for s, _ in NOUNS] + [p for _, p in NOUNS]
        self.vocab += [w for w in FILLERS if w != "the"]
        self.input_size = len(self.vocab)
        self.the_id = 1
        self.singular_ids = torch.arange(2, 2 + len(NOUNS))
        self.plural_ids = self.singular_ids + len(NOUNS)
        self.filler_ids = torch.tensor([self.vocab.index(w) for w in FILLERS])
        # The verb is the (seq_len + 1)-th token after the subject: seq_len fillers lie in between, and the
        # model predicts it at the last input step, seq_len recurrent updates after reading the subject.
        self.agreement_distance = seq_len + 1

    def total_steps(self) -> int:
        return self.seq_len + 2

    def dependency(self) -> Dependency:
        # Only the subject carries the number: a model that ignores it is at chance.
        return Dependency(self.subject_position + 1, self.total_steps(), "the subject", "the verb", self.baseline)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n, b, length = len(NOUNS), batch_size, self.seq_len
        plural = torch.randint(0, 2, (b,), generator=generator)
        subject = self.singular_ids[torch.randint(0, n, (b,), generator=generator)] + plural * n
        filler = self.filler_ids[torch.randint(0, len(FILLERS), (b, length), generator=generator)]
        # All draws happen at every rate, so one seed gives the same fillers whatever the rate.
        attract = torch.rand(b, length, generator=generator) < self.attractor_rate
        attractor = self.singular_ids[torch.randint(0, n, (b, length), generator=generator)]
        attractor = attractor + (1 - plural)[:, None] * n  # opposite number to the subject
        filler = torch.where(attract, attractor, filler)
        the = torch.full((b, 1), self.the_id)
        return torch.cat([the, subject[:, None], filler], dim=1), plural

    def pair(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One sentence twice, singular then plural subject, so the difference isolates number."""
        inputs, _ = self.sample(1, generator)
        noun = (inputs[0, self.subject_position] - 2) % len(NOUNS)
        singular, plural = inputs.clone(), inputs.clone()
        singular[0, self.subject_position] = self.singular_ids[noun]
        plural[0, self.subject_position] = self.plural_ids[noun]
        return singular, plural

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets)

    def metric(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs.argmax(-1) == targets).float().mean()

    def decode(self, inputs_row: Tensor) -> str:
        ids = inputs_row.reshape(-1).tolist()
        verb = "were" if ids[self.subject_position] in self.plural_ids.tolist() else "was"
        return " ".join(self.vocab[i] for i in ids) + f" → {verb}"


class AddingTask(Task):
    """Sum two marked numbers from a long stream (Hochreiter & Schmidhuber 1997; setup of Le et al. 2015)."""

    name = "adding"
    input_kind = "float"
    input_size = 2  # channel 0: value U(0, 1); channel 1: marker (1.0 on the two values to add)
    output_size = 1
    last_step_only = True
    metric_name = "mse"
    higher_is_better = False
    loss_name = "mse"
    # Always answering 1.0 (the mean of the sum) costs Var(U1 + U2) = 2 * 1/12 = 1/6.
    baseline = 1 / 6
    baseline_loss = 1 / 6
    baseline_label = "predict 1.0 (MSE 1/6)"
    perfect = 0.0
    min_seq_len = 2  # one marker in each half needs two steps

    def total_steps(self) -> int:
        return self.seq_len

    def dependency(self) -> Dependency:
        # The first marker lies in the first half, at step seq_len // 2 at the latest: a gradient that cannot reach
        # that far back reaches no first marker at all. A model that keeps only the second (nearer) value and
        # answers it + 0.5 still halves the memoryless MSE, to Var(U) = 1/12: that is the score to beat.
        return Dependency(self.seq_len // 2, self.total_steps(), "the first marker", "the answer", 1 / 12)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b, t, half = batch_size, self.seq_len, self.seq_len // 2
        values = torch.rand(b, t, generator=generator)
        first = torch.randint(0, half, (b,), generator=generator)
        second = torch.randint(half, t, (b,), generator=generator)
        markers = torch.zeros(b, t)
        markers[torch.arange(b), first] = 1.0
        markers[torch.arange(b), second] = 1.0
        targets = (values * markers).sum(1, keepdim=True)
        return torch.stack([values, markers], dim=-1), targets

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(outputs, targets)

    def metric(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(outputs, targets)

    def decode(self, inputs_row: Tensor) -> str:
        values, markers = inputs_row[:, 0], inputs_row[:, 1]
        marked = markers.nonzero().flatten().tolist()
        terms = " + ".join(f"{values[i]:.3f} (t={i + 1})" for i in marked)
        return f"{terms} = {values[marked].sum():.3f}  [T={len(values)}]"


class CopyTask(Task):
    """Reproduce 10 symbols after a long blank gap (Arjovsky, Shah & Bengio 2016)."""

    name = "copy"
    input_kind = "tokens"
    input_size = 10  # 0 = blank, 1..8 = data symbols, 9 = delimiter
    output_size = 9  # blank or one of the 8 symbols
    last_step_only = False
    metric_name = "accuracy"
    higher_is_better = True
    loss_name = "cross-entropy"
    baseline = 1 / 8  # guessing among the 8 symbols at the 10 recall steps
    baseline_label = "memoryless (12.5 %)"
    perfect = 1.0
    n_symbols, n_copy, delimiter = 8, 10, 9

    def __init__(self, seq_len: int):
        super().__init__(seq_len)
        # Blanks predicted perfectly, uniform over the 8 symbols at the 10 recall steps.
        self.baseline_loss = self.n_copy * math.log(self.n_symbols) / self.total_steps()

    def total_steps(self) -> int:
        return self.seq_len + 2 * self.n_copy

    def dependency(self) -> Dependency:
        # Symbol k (step k) is recalled at step seq_len + 10 + k: the last symbol is answered at the last step.
        return Dependency(self.n_copy, self.total_steps(), "the symbols", "their recall", self.baseline)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b, t, k = batch_size, self.total_steps(), self.n_copy
        symbols = torch.randint(1, self.n_symbols + 1, (b, k), generator=generator)
        inputs = torch.zeros(b, t, dtype=torch.int64)
        inputs[:, :k] = symbols
        inputs[:, t - k - 1] = self.delimiter  # after seq_len - 1 blanks; 10 blanks follow
        targets = torch.zeros(b, t, dtype=torch.int64)
        targets[:, t - k :] = symbols
        return inputs, targets

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs.reshape(-1, self.output_size), targets.reshape(-1))

    def metric(self, outputs: Tensor, targets: Tensor) -> Tensor:
        k = self.n_copy
        return (outputs[:, -k:].argmax(-1) == targets[:, -k:]).float().mean()

    def decode(self, inputs_row: Tensor) -> str:
        ids = inputs_row.reshape(-1).tolist()
        words, blanks = [], 0
        for i in ids + [None]:  # the sentinel flushes a trailing run of blanks
            if i == 0:
                blanks += 1
                continue
            if blanks:
                words.append(f"_×{blanks}")
                blanks = 0
            if i is not None:
                words.append("|" if i == self.delimiter else str(i))
        recall = " ".join(str(i) for i in ids[: self.n_copy])
        return " ".join(words) + f" → {recall}"


TASKS: dict[str, type[Task]] = {"agreement": AgreementTask, "adding": AddingTask, "copy": CopyTask}


def make_task(name: str, seq_len: int, **options) -> Task:
    """Build a task by name, so the CLI and dashboard can offer the choice as a string."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    cls = TASKS[name]
    allowed = [p for p in inspect.signature(cls).parameters if p != "seq_len"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"task {name!r} has no option {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}"
        )
    return cls(seq_len, **options)
