"""Pause, step and resume for a run training in a process of its own.

The server sets and clears `paused`; the run's process calls `hold` between optimiser steps, which returns at
once unless the run is paused: then it commits what was recorded (so every viewer sees the step it stopped at)
and waits until it is resumed, told to take one more step, or told to end. Pausing only waits, so a paused run's
numbers are the numbers of the same config trained straight through. A pause ends by itself after
MAX_PAUSE_SECONDS: a paused run holds one of the server's training slots. A paced run (a lesson whose effect
is over within a few steps) waits out the rest of each `min_step_seconds` in the same place.
"""

from __future__ import annotations

import time
from typing import Callable

MAX_PAUSE_SECONDS = 600.0
WAIT_SECONDS = 0.1  # how often a held run looks whether it should end


class Pause:
    """Shared between the server and one run's process (made from the run's multiprocessing context)."""

    def __init__(self, context, min_step_seconds: float = 0.0):
        self.min_step_seconds = min_step_seconds  # a paced lesson: each step takes at least this long to show
        self._last = 0.0  # when the run's process last returned from `hold`
        self.paused = context.Event()
        self.holding = context.Event()  # set while the process waits between steps, its steps committed
        self._steps = context.Semaphore(0)  # one permit per requested single step

    def pause(self) -> None:
        while self._steps.acquire(block=False):
            pass  # steps asked for before this pause do not leak into it
        self.paused.set()

    def resume(self) -> None:
        self.paused.clear()

    def step(self) -> None:
        """Let one more optimiser step through a paused run."""
        self._steps.release()

    def hold(self, should_end: Callable[[], bool], commit: Callable[[], None]) -> float:
        """In the run's process, between steps: wait while paused (see the module), and out the rest of a paced
        step (committing each one, so it shows at once); returns the seconds waited, which are not training."""
        if not self.paused.is_set():
            return self._pace(commit)
        commit()
        started = time.monotonic()
        self.holding.set()
        try:
            while self.paused.is_set() and not should_end() and time.monotonic() - started < MAX_PAUSE_SECONDS:
                if self._steps.acquire(timeout=WAIT_SECONDS):
                    break
            if time.monotonic() - started >= MAX_PAUSE_SECONDS:
                self.paused.clear()
        finally:
            self.holding.clear()
        self._last = time.monotonic()
        return self._last - started

    def _pace(self, commit: Callable[[], None]) -> float:
        if not self.min_step_seconds:
            return 0.0
        commit()
        since = time.monotonic() - self._last if self._last else 0.0  # the first step waits its whole time too
        wait = max(0.0, self.min_step_seconds - since)
        time.sleep(wait)
        self._last = time.monotonic()
        return wait
