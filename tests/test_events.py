"""The loop's seams: the event vocabulary and its order, schedules, quantities' named numbers, and the registries
that `RunConfig`'s choices come from."""

import dataclasses

import pytest
import torch

from diagnostics import clipping, initialisers, nonfinite, optimizers, tasks
from diagnostics.cells import ACTIVATION_FNS, GATE_BLOCKS
from diagnostics.config import RunConfig, field_map
from diagnostics.events import EVENTS, Callback, Callbacks, Fit
from diagnostics.quantities import Quantity, _shaped, collect
from diagnostics.schedules import Schedule
from diagnostics.train import train

class Log(Callback):
    """Records every event it receives, as (event, step number)."""

    def __init__(self):
        self.seen = []

    def __getattribute__(self, name):
        if name in EVENTS:
            return lambda fit, step=None: self.seen.append((name, None if step is None else step.number))
        return object.__getattribute__(self, name)


def test_events_fire_in_the_documented_order_with_non_finite_only_when_it_happens():
    log = Log()
    events = Callbacks([log])
    fit = Fit(model=None, params=[], names=[], summary=None)
    for name in ("before_step", "after_backward", "after_clip", "after_step"):
        events.fire(name, fit, step=type("S", (), {"number": 1})())
    events.fire("after_fit", fit)
    assert log.seen == [("before_step", 1), ("after_backward", 1), ("after_clip", 1), ("after_step", 1),
                        ("after_fit", None)]
    with pytest.raises(ValueError, match="unknown event 'after_everything'"):
        events.fire("after_everything", fit)


def test_every_callback_method_is_an_event_with_a_docstring():
    methods = [m for m in vars(Callback) if not m.startswith("_")]
    assert methods == list(EVENTS)
    assert all(getattr(Callback, m).__doc__ for m in methods)


def test_lab_loop_fires_non_finite_on_the_diverging_step_and_stops_after_it(monkeypatch):
    import diagnostics.train as lab
    log = Log()
    real = lab.Callbacks
    # The real loop with one more handler at the end of its list, which logs what it is told.
    monkeypatch.setattr(lab, "Callbacks", lambda handlers: real(handlers + [log]))
    config = RunConfig(cell="rnn", init="normal", init_scale=8.0, activation="relu", clip="none", lr=1.0,
                       hidden_size=16, seq_len=12, steps=30, record_every=2)
    summary, _ = train(config)
    assert summary.status == "diverged" and summary.steps_done == 2
    step2 = [e for e, n in log.seen if n == 2]
    assert step2 == ["before_step", "after_backward", "after_clip", "on_nonfinite", "after_step"]
    assert [e for e, n in log.seen if n == 1] == ["before_step", "after_backward", "after_clip", "after_step"]
    assert log.seen[-1] == ("after_fit", None)


@pytest.mark.parametrize("schedule, due", [
    (Schedule.every(1), list(range(1, 13))),
    (Schedule.every(5), [1, 5, 10]),
    (Schedule.every(0), []),
    (Schedule("log_spaced"), [1, 2, 5, 10]),
])
def test_schedules(schedule, due):
    assert [s for s in range(1, 13) if schedule.due(s)] == due


def test_log_spaced_schedule_stays_bounded_over_a_long_run():
    due = [s for s in range(1, 100_001) if Schedule("log_spaced").due(s)]
    assert due[:7] == [1, 2, 5, 10, 20, 50, 100] and due[-3:] == [20_000, 50_000, 100_000] and len(due) == 16


def test_schedule_refuses_unknown_kinds():
    with pytest.raises(ValueError, match="allowed: every_step, every_k, log_spaced, never"):
        Schedule("sometimes")


class Named(Quantity):
    def __init__(self, tensors):
        super().__init__(Schedule.every(1))
        self.tensors, self.got = tensors, None

    def measure(self, fit, step):
        return self.tensors

    def rows(self, fit, step, numbers):
        self.got = numbers


def test_collect_hands_each_quantity_its_own_numbers_by_name_and_shape():
    a = Named({"scalar": torch.tensor(2.5), "matrix": torch.arange(6.0).view(2, 3)})
    b = Named({"cube": torch.arange(8.0).view(2, 2, 2) + 100})
    step = type("S", (), {"number": 1, "trace": None})()
    collect([a, b], None, step)
    assert a.got == {"scalar": 2.5, "matrix": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]}
    assert b.got == {"cube": torch.arange(8.0).add(100).view(2, 2, 2).tolist()}
    assert _shaped([1.0, 2.0], (2,)) == [1.0, 2.0]


def test_config_choices_are_the_registries_keys():
    registries = {"cell": GATE_BLOCKS, "activation": ACTIVATION_FNS, "init": initialisers.INITIALISERS,
                  "task": tasks.TASKS, "optimizer": optimizers.OPTIMIZERS, "clip": clipping.CLIPPERS,
                  "on_nonfinite": nonfinite.NONFINITE_POLICIES}
    fields = field_map()
    for name, registry in registries.items():
        assert fields[name].metadata["choices"] == tuple(registry), name
    choice_fields = {f.name for f in dataclasses.fields(RunConfig) if f.metadata["choices"]}
    assert choice_fields == set(registries)
