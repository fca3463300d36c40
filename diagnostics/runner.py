"""One recorded run from start to stored diagnosis: what the CLI and the dashboard's worker both call."""

from __future__ import annotations

import threading
from typing import Callable

from .config import RunConfig
from .store import Store
from .train import RunSummary, finish_diagnosis, train


def run_into_store(config: RunConfig, store: Store, stop: threading.Event | None = None,
                   on_step: Callable[[RunSummary], None] | None = None, run_id: int | None = None) -> RunSummary:
    """Train `config`, streaming every step into `store`; diagnose the stored data and close the run.

    Pass `run_id` of a run made with `store.create_run` to train into it (the dashboard creates the row
    first so the page can poll it); otherwise a new run is created."""
    if run_id is None:
        run_id = store.create_run(config.to_dict())
    writer = store.writer(run_id)
    try:
        summary, _ = train(config, sink=writer, stop=stop, on_step=on_step, run_id=run_id)
        writer.flush()
        finish_diagnosis(summary, store.load(run_id), config)
    except BaseException:
        # Keep what was recorded: the run ends as "stopped" with every step written so far.
        writer.close("stopped", {"error": "training ended by an exception or interrupt"})
        raise
    writer.close(summary.status, summary.to_dict())
    return summary
