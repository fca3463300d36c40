"""One recorded run from start to stored diagnosis: what the CLI and the dashboard's worker both call."""

from __future__ import annotations

import io
import os
import threading
from typing import Callable

import torch

from . import budget
from .config import RunConfig
from .description import describe
from .store import Store, StoreError
from .model import RecurrentModel, build
from .summary import RunSummary
from .train import train
from .verdict import finish_diagnosis, stored_verdict


TORCH_THREADS_ENV = "GFL_TORCH_THREADS"


class OwnerGone(Exception):
    """Raised from `on_step` when whoever started the run is gone: what was recorded is kept, but the run is not
    finished, so it reads back as "interrupted" rather than "stopped" (nobody stopped it)."""


def use_torch_threads() -> int:
    """Set PyTorch's intra-op threads from $GFL_TORCH_THREADS (default 1) and return the number.

    These models are small: splitting each matmul across threads costs more in synchronisation than it saves,
    and on a busy 2-core machine two threads per run were measured 5–19× slower than one. Runs in parallel
    use the cores instead (see GFL_MAX_RUNS)."""
    raw = os.environ.get(TORCH_THREADS_ENV, "")
    threads = int(raw) if raw.isdigit() and int(raw) > 0 else 1
    torch.set_num_threads(threads)
    return threads


def run_into_store(config: RunConfig, store: Store, stop: threading.Event | None = None,
                   on_step: Callable[[RunSummary], None] | None = None, run_id: int | None = None,
                   hold: Callable[[Callable[[], None]], float] | None = None) -> RunSummary:
    """Train `config`, streaming every step into `store`; diagnose the stored data and close the run.

    Pass `run_id` of a run made with `store.create_run` to train into it (the dashboard creates the row
    first so the page can poll it); otherwise a new run is created. `hold(commit)` is called after every step
    with a function that commits what was recorded; it may wait (a paused run, see `pausing`) and returns the
    seconds it waited, which do not count as training time. A config too big to train here is refused
    (ConfigError) before anything is stored."""
    budget.check(config)
    if run_id is None:
        run_id = store.create_run(config.to_dict(), describe(config).to_dict())
    writer = store.writer(run_id)
    held = 0.0

    def after_step(summary: RunSummary) -> None:
        nonlocal held
        if on_step is not None:
            on_step(summary)
        if hold is not None:
            held += hold(writer.flush)

    def keep_weights(model: RecurrentModel, step: int) -> None:
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        store.save_checkpoint(run_id, step, buffer.getvalue())

    try:
        summary, _ = train(config, sink=writer, stop=stop, on_step=after_step, run_id=run_id,
                           on_end=lambda model, summary: keep_weights(model, summary.steps_done),
                           on_weights=keep_weights)
        summary.train_seconds -= held
        writer.flush()
        finish_diagnosis(summary, stored_verdict(summary, store, run_id, config), config)
    except OwnerGone:
        writer.flush()
        raise
    except BaseException:
        # Keep what was recorded: the run ends as "stopped" with every step written so far.
        try:
            writer.close("stopped", {"error": "training ended by an exception or interrupt"})
        except StoreError:
            pass  # the store failed (a full disk): committed steps stay, the run reads back as interrupted
        raise
    writer.close(summary.status, summary.to_dict())
    return summary


def load_trained_model(store: Store, run_id: int, step: int | None = None) -> tuple[RecurrentModel, int] | None:
    """The run's model with its weights after training step `step` (None: the last saved) and the step they are
    from, or None without such a checkpoint."""
    checkpoint = store.load_checkpoint(run_id, step)
    if checkpoint is None:
        return None
    step, weights = checkpoint
    model, _ = build(RunConfig.from_dict(store.get_run(run_id).config))
    model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
    return model, step
