"""The Runs page's comparison: labels that name what differs, every lab quantity overlaid, profiles at a step,
and what a scale cannot show counted, not dropped silently."""

import math

import pandas as pd
import pytest

from diagnostics import rundata as rd
from diagnostics.chartdata import lab_chart_data
from diagnostics.compare import compare_labels, run_label
from diagnostics.compare_charts import (QUANTITIES, compare_chart, compare_profile_chart, compare_profiles,
                                        compare_series, nearest_recorded)
from diagnostics.config import RunConfig
from diagnostics.lessons import LESSONS
from diagnostics.runner import run_into_store
from diagnostics.store import Store

ROWS = pd.DataFrame({"run": ["1 rnn"] * 5 + ["2 lstm"] * 5, "series": "loss", "step": list(range(1, 6)) * 2,
                     "value": [0.7, 0.0, math.nan, math.inf, 0.5, 0.69, 0.4, 0.2, -math.inf, 0.1]})
SMALL = RunConfig(hidden_size=8, batch_size=8, seq_len=5, steps=12, record_every=4, weight_decay=0.01)


@pytest.mark.parametrize("quantity,hidden,note", [
    (rd.LOSS, 4, "4 values not drawn: 0, NaN or ±Inf, which a log scale cannot show"),
    (rd.METRIC, 3, "3 values not drawn: NaN or ±Inf"),
], ids=["log-scale", "linear-scale"])
def test_values_a_scale_cannot_show_are_counted(quantity, hidden, note):
    spec = compare_chart(ROWS, quantity).to_dict()
    assert spec["title"]["subtitle"] == [note]
    [drawn] = spec["datasets"].values()
    assert len(drawn) == len(ROWS) - hidden
    assert all(math.isfinite(row["value"]) for row in drawn)


def test_nothing_to_hide_means_no_subtitle():
    spec = compare_chart(ROWS[ROWS["value"].between(0.01, 1)], rd.LOSS).to_dict()
    assert "subtitle" not in spec["title"] or not spec["title"]["subtitle"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Two runs differing only in weight decay, the second with two layers' worth of per-layer series."""
    store = Store(tmp_path_factory.mktemp("compare") / "runs.sqlite")
    ids = [run_into_store(config, store).run_id
           for config in (SMALL, SMALL.replace(weight_decay=0.0), SMALL.replace(num_layers=2, cell="lstm"))]
    return store, ids


def test_runs_that_differ_only_in_weight_decay_or_forget_bias_get_labels_naming_it(compared):
    store, ids = compared
    runs = [store.get_run(i) for i in ids[:2]]
    assert compare_labels(runs) == {ids[0]: f"#{ids[0]} weight_decay 0.01", ids[1]: f"#{ids[1]} weight_decay 0"}
    assert run_label(runs[0]).endswith("seed 0 · batch_size 8 · steps 12 · weight_decay 0.01 · record_every 4")
    assert run_label(runs[1]).endswith("seed 0 · batch_size 8 · steps 12 · record_every 4")  # decay at its default
    lesson = next(lesson for lesson in LESSONS if lesson.slug == "forget-bias")
    labels = set()
    for variant in lesson.variants:  # identical summaries, told apart by the field they differ in
        run_id = store.create_run(variant.config.to_dict())
        labels.add(run_label(store.get_run(run_id)).split(" ", 1)[1])
    assert len(labels) == 2 and any("seed 0 · forget_bias 0 · steps 800" in label for label in labels)
    rnn, lstm = (store.create_run(c.to_dict()) for c in (SMALL, SMALL.replace(cell="lstm", forget_bias=0.0)))
    assert compare_labels([store.get_run(rnn), store.get_run(lstm)]) == {
        rnn: f"#{rnn} cell rnn", lstm: f"#{lstm} cell lstm, forget_bias 0"}  # no forget gate in a vanilla RNN


@pytest.mark.parametrize("quantity", sorted(QUANTITIES))
def test_every_quantity_is_the_lab_charts_own_series_of_each_run(compared, quantity):
    store, ids = compared
    runs = [store.get_run(i) for i in ids]
    labels = compare_labels(runs)
    data = {labels[i]: lab_chart_data(store, i) for i in ids}
    rows = compare_series(store, data, {labels[i]: i for i in ids}, quantity)
    assert set(rows["run"]) == set(labels.values())
    assert rows.groupby("run").size().min() > 0, quantity
    first = rows[rows["run"] == labels[ids[0]]]
    full = store.load(ids[0])
    if quantity in (rd.LOSS, rd.METRIC, rd.HELDOUT_METRIC, rd.PENALTY, rd.GRAD_NORM_PRE_CLIP):
        assert first["value"].tolist() == full.series(quantity).tolist()
        assert first["step"].tolist() == full.series(quantity).index.tolist()
    if quantity in (rd.WEIGHT_NORM, rd.GRAD_NORM, rd.SIGMA_MAX, rd.UPDATE_RATIO, rd.WEIGHT_MAX_ABS):
        two_layers = rows[rows["run"] == labels[ids[2]]]
        assert {"layer 0", "layer 1"} <= set(two_layers["series"])
        spec = compare_chart(rows, quantity).to_dict()
        assert spec["encoding"]["strokeDash"]["field"] == "series"  # layers told apart by dash, runs by colour
    if quantity == rd.WEIGHT_NORM:
        layer0 = first[first["series"] == "layer 0"]
        assert layer0["value"].tolist() == full.series(rd.WEIGHT_NORM, layer=0).tolist()


def test_profiles_at_a_chosen_step_use_each_runs_nearest_recorded_step(compared):
    store, ids = compared
    labels = {f"run {i}": i for i in ids[:2]}
    assert store.recorded_steps(ids[0]) == [1, 4, 8, 12]
    assert nearest_recorded([1, 4, 8, 12], 6) == 4 and nearest_recorded([1, 4, 8, 12], 11) == 12
    assert nearest_recorded([], 3) is None
    rows = compare_profiles(store, labels, 7)
    assert sorted(set(rows["run"])) == [f"run {ids[0]} (step 8)", f"run {ids[1]} (step 8)"]
    expected = store.time_grads_at(ids[0], 8)
    expected = expected[expected["layer"] == 0]
    got = rows[rows["run"] == f"run {ids[0]} (step 8)"]
    assert got["t"].tolist() == expected["t"].tolist() and got["value"].tolist() == expected["value"].tolist()
    spec = compare_profile_chart(rows, 7).to_dict()
    assert spec["title"]["text"] == "gradient back through time at training step 7 (layer 0)"
    assert spec["encoding"]["y"]["scale"]["type"] == "log"
