"""Two training loops run one step each in turn, so drift and other processes' load hit both sides alike."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# A loop takes `on_step(step)` and calls it after every optimiser step; the bench times what lies between calls.
Loop = Callable[[Callable[[int], None]], None]


@dataclass
class StepTimes:
    """Per step number: wall-clock seconds, and CPU seconds of the loop's own thread."""

    wall: dict[int, float] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)


def alternate(loop_a: Loop, loop_b: Loop) -> tuple[StepTimes, StepTimes]:
    """Times per step of each loop, with the loops interleaved step by step.

    Each loop runs in its own thread, but a baton lets only one of them compute at a time; the other waits
    on a semaphore, so neither slows the other down. CPU time is the loop thread's own (`thread_time`): with one
    intra-op thread all of a step's work runs there (CPU autograd runs in the calling thread), and it barely
    moves when other processes take the cores, which wall-clock time on a shared machine does."""
    loops = (loop_a, loop_b)
    turns = [threading.Semaphore(0), threading.Semaphore(0)]
    times = (StepTimes(), StepTimes())
    errors: list[BaseException] = []
    finished = [False, False]  # a loop that ended (or failed) no longer takes turns: the other goes on alone

    def worker(i: int) -> None:
        other = turns[1 - i]
        turns[i].acquire()
        started, cpu_started = time.perf_counter(), time.thread_time()

        def on_step(step: int) -> None:
            nonlocal started, cpu_started
            times[i].wall[step] = time.perf_counter() - started
            times[i].cpu[step] = time.thread_time() - cpu_started
            other.release()
            if not finished[1 - i]:
                turns[i].acquire()
            started, cpu_started = time.perf_counter(), time.thread_time()

        try:
            loops[i](on_step)
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)
        finally:
            finished[i] = True
            other.release()  # the other loop goes on alone once this one has finished

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in (0, 1)]
    for t in threads:
        t.start()
    turns[0].release()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return times[0], times[1]


def per_step(times: dict[int, float], first: int, kind: Callable[[int], object]) -> float:
    """Typical seconds per step from step `first` on: the median of each kind of step (e.g. recorded or not),
    averaged with the weight of that kind in the measured window, so rare heavy steps count as often as they
    happen while one slow outlier does not."""
    groups: dict[object, list[float]] = {}
    for step, seconds in times.items():
        if step >= first:
            groups.setdefault(kind(step), []).append(seconds)
    total = sum(len(g) for g in groups.values())
    return sum(len(g) * statistics.median(g) for g in groups.values()) / total
