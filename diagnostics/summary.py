"""`RunSummary`: the bounded running summary of one run (nothing per step), the basis of the CLI's JSON."""

from __future__ import annotations

from dataclasses import dataclass, field

from .store import strict_json


@dataclass
class RunSummary:
    """What a run did, in a few numbers: updated every step while it trains, diagnosed when it ends."""

    run_id: int | None = None
    status: str = "running"
    steps_done: int = 0
    final_loss: float | None = None
    final_metric: float | None = None
    metric_name: str = ""
    first_nonfinite: dict | None = None
    max_grad_norm: float | None = None
    clip_count: int = 0
    steps_taken: int = 0
    skipped_steps: int = 0
    time_grad_step: int | None = None
    time_grad_profile: list[float] = field(default_factory=list)
    time_grad_ratio: float | None = None
    time_grad_gain: float | None = None  # fitted per-step gain of time_grad_profile (< 1: decays back in time)
    memory_horizon: float | None = None  # steps back the profile stays at or above gradflow.VANISHED
    diagnoses: list[dict] = field(default_factory=list)
    verdict: str | None = None  # the diagnosis in one sentence: whether anything harmed the run, shown first
    learned: bool | None = None  # clearly beat a model that ignores the task's long-range dependency
    train_seconds: float = 0.0

    @property
    def clip_rate(self) -> float:
        """Share of taken optimiser steps on which clipping changed the gradient."""
        return self.clip_count / self.steps_taken if self.steps_taken else 0.0

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["clip_rate"] = self.clip_rate
        return out

    def to_json(self) -> str:
        """Strict JSON: non-finite numbers become null."""
        return strict_json(self.to_dict())
