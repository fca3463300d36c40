"""A run's chart data and chart specs computed once per stored state, for every page that draws it.

Thirty students watching one lesson run poll it every second, but its rows change only when its writer commits
(about once a second) or it finishes; without this every poll of every viewer read and reduced the whole run
again, and built its nine chart specs again (the costlier part). The key is what the store says of the run
(steps committed, status), so a viewer never gets data older than the store's state when it asked.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from .chartdata import LabChartData, lab_chart_data
from .chartspecs import ChartSpec, lab_chart_specs
from .store import Store

KEEP_RUNS = 32  # runs whose latest chart data stays in memory (a few MB each at the lessons' sizes)


class SharedChartData:
    """`get(run_id)` returns the run's `LabChartData` and `specs(run_id)` its charts' specs, computing each only
    when the run changed since the last call by anyone; concurrent callers of one run wait for one computation."""

    def __init__(self, store: Store, keep: int = KEEP_RUNS):
        self.store = store
        self.keep = keep
        self.computed = 0  # how many times chart data was read from the store (tests and P8 count it)
        self.built = 0  # how many times a run's chart specs were built
        self._guard = threading.Lock()
        self._runs: OrderedDict[int, _Entry] = OrderedDict()
        self._computing: dict[int, threading.Lock] = {}

    def get(self, run_id: int) -> LabChartData:
        return self._entry(run_id, with_specs=False).data

    def specs(self, run_id: int) -> tuple[LabChartData, tuple[tuple[ChartSpec, ...], ...]]:
        entry = self._entry(run_id, with_specs=True)
        return entry.data, entry.specs

    def _entry(self, run_id: int, with_specs: bool) -> _Entry:
        info = self.store.get_run(run_id)  # StoreError for a deleted run, as lab_chart_data would raise
        key = (info.steps_done, info.status)
        with self._guard:
            lock = self._computing.setdefault(run_id, threading.Lock())
        with lock:
            with self._guard:
                entry = self._runs.get(run_id)
            if entry is None or entry.key != key:
                entry = _Entry(key, lab_chart_data(self.store, run_id))
                with self._guard:
                    self.computed += 1
            if with_specs and entry.specs is None:
                entry = _Entry(entry.key, entry.data, lab_chart_specs(entry.data))
                with self._guard:
                    self.built += 1
            with self._guard:
                self._runs[run_id] = entry
                self._runs.move_to_end(run_id)
                while len(self._runs) > self.keep:
                    evicted, _ = self._runs.popitem(last=False)
                    self._computing.pop(evicted, None)
            return entry


@dataclass(frozen=True)
class _Entry:
    key: tuple  # (steps committed, status) when the data was read
    data: LabChartData
    specs: tuple[tuple[ChartSpec, ...], ...] | None = None
