"""One recorded run from start to stored diagnosis: what the CLI and the dashboard's worker both call."""

from __future__ import annotations

import io
import threading
from typing import Callable

import torch

from .config import RunConfig
from .store import Store
from .model import RecurrentModel, build
from .train import RunSummary, finish_diagnosis, train


def run_into_store(config: RunConfig, store: Store, stop: threading.Event | None = None,
                   on_step: Callable[[RunSummary], None] | None = None, run_id: int | None = None) -> RunSummary:
    """Train `config`, streaming every step into `store`; diagnose the stored data and close the run.

    Pass `run_id` of a run made with `store.create_run` to train into it (the dashboard creates the row
    first so the page can poll it); otherwise a new run is created."""
    if run_id is None:
        run_id = store.create_run(config.to_dict())
    writer = store.writer(run_id)

    def keep_weights(model: RecurrentModel, summary: RunSummary) -> None:
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        store.save_checkpoint(run_id, summary.steps_done, buffer.getvalue())

    try:
        summary, _ = train(config, sink=writer, stop=stop, on_step=on_step, run_id=run_id, on_end=keep_weights)
        writer.flush()
        finish_diagnosis(summary, store.load(run_id), config)
    except BaseException:
        # Keep what was recorded: the run ends as "stopped" with every step written so far.
        writer.close("stopped", {"error": "training ended by an exception or interrupt"})
        raise
    writer.close(summary.status, summary.to_dict())
    return summary


def load_trained_model(store: Store, run_id: int) -> tuple[RecurrentModel, int] | None:
    """The run's model with its last saved weights and the step they are from, or None without a checkpoint."""
    checkpoint = store.load_checkpoint(run_id)
    if checkpoint is None:
        return None
    step, weights = checkpoint
    model, _ = build(RunConfig.from_dict(store.get_run(run_id).config))
    model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
    return model, step
