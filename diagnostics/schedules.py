"""When a recorded quantity is measured: every step, every k-th step, or on log-spaced steps for long runs."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("every_step", "every_k", "log_spaced", "never")
LOG_MANTISSAS = (1, 2, 5)  # log-spaced steps 1, 2, 5, 10, 20, 50, …: three per decade


@dataclass(frozen=True)
class Schedule:
    """`every_k` measures the first step and every k-th (so a run of any length has its untrained start);
    `log_spaced` measures 1, 2, 5, 10, 20, 50, … — dense where training changes fastest, bounded for long runs."""

    kind: str
    k: int = 1

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule {self.kind!r}; allowed: {', '.join(KINDS)}")
        if self.kind == "every_k" and self.k < 1:
            raise ValueError(f"an every_k schedule needs k ≥ 1, got {self.k}")

    @classmethod
    def every(cls, k: int) -> "Schedule":
        """Every k-th step (and the first); k = 0 turns the quantity off, k = 1 is every step."""
        if k <= 0:
            return cls("never")
        return cls("every_step") if k == 1 else cls("every_k", k)

    def due(self, step: int) -> bool:
        if self.kind == "every_step":
            return True
        if self.kind == "every_k":
            return step == 1 or step % self.k == 0
        if self.kind == "log_spaced":
            if step < 1:
                return False
            decade = 10 ** (len(str(step)) - 1)
            return step % decade == 0 and step // decade in LOG_MANTISSAS
        return False
