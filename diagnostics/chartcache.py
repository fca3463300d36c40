"""A run's chart data computed once per stored state, for every page that draws it.

Thirty students watching one lesson run poll it every second, but its rows change only when its writer commits
(about once a second) or it finishes; without this every poll of every viewer read and reduced the whole run
again. The key is what the store says of the run (steps committed, status), so a viewer never gets data older
than the store's state when it asked.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .chartdata import LabChartData, lab_chart_data
from .store import Store

KEEP_RUNS = 32  # runs whose latest chart data stays in memory (a few MB each at the lessons' sizes)


class SharedChartData:
    """`get(run_id)` returns the run's `LabChartData`, computing it only when the run changed since the last
    call by anyone; concurrent callers of one run wait for a single computation."""

    def __init__(self, store: Store, keep: int = KEEP_RUNS):
        self.store = store
        self.keep = keep
        self.computed = 0  # how many times chart data was read from the store (tests and P8 count it)
        self._guard = threading.Lock()
        self._runs: OrderedDict[int, tuple[tuple, LabChartData]] = OrderedDict()
        self._computing: dict[int, threading.Lock] = {}

    def get(self, run_id: int) -> LabChartData:
        info = self.store.get_run(run_id)  # StoreError for a deleted run, as lab_chart_data would raise
        key = (info.steps_done, info.status)
        with self._guard:
            lock = self._computing.setdefault(run_id, threading.Lock())
        with lock:
            with self._guard:
                cached = self._runs.get(run_id)
            if cached is not None and cached[0] == key:
                with self._guard:
                    self._runs.move_to_end(run_id)
                return cached[1]
            data = lab_chart_data(self.store, run_id)
            with self._guard:
                self.computed += 1
                self._runs[run_id] = (key, data)
                self._runs.move_to_end(run_id)
                while len(self._runs) > self.keep:
                    evicted, _ = self._runs.popitem(last=False)
                    self._computing.pop(evicted, None)
            return data
