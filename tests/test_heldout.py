"""The held-out metric during training (its schedule, its values) and the smoothed training-batch metric."""

import numpy as np
import pandas as pd
import pytest

from diagnostics import budget, charts
from diagnostics import rundata as rd
from diagnostics.chartdata import (lab_chart_data, lab_chart_data_from_memory, smoothed_blocks, smoothed_metric,
                                   smoothing_steps)
from diagnostics.config import RunConfig
from diagnostics.heldout import (HELDOUT_TIME_SHARE, MAX_HELDOUT_POINTS, eval_seconds, heldout_every,
                                 heldout_steps, is_heldout_step)
from diagnostics.lessons import LESSONS
from diagnostics.palette import BLUE, GREEN, LIGHT_BLUE
from diagnostics.runner import run_into_store
from diagnostics.store import CHART_BLOCK, Store
from diagnostics.train import train

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(hidden_size=8, batch_size=8, seq_len=5)


def test_every_lesson_measures_held_out_on_its_recorded_steps_or_a_multiple_of_them():
    for lesson in LESSONS:
        for variant in lesson.variants:
            config = variant.config
            every = heldout_every(config)
            assert every % config.record_every == 0 and every <= 4 * config.record_every, (lesson.slug, every)
            assert heldout_steps(config) <= MAX_HELDOUT_POINTS


def test_a_costly_measurement_is_thinned_to_a_multiple_of_record_every_within_its_time_share():
    config = RunConfig(cell="gru", hidden_size=128, batch_size=16, task="copy", seq_len=100, steps=1000,
                       record_every=10)
    every = heldout_every(config)
    assert every > config.record_every and every % config.record_every == 0
    step = budget.step_cost(config).seconds
    assert eval_seconds(config) <= HELDOUT_TIME_SHARE * every * step
    assert eval_seconds(config) > HELDOUT_TIME_SHARE * (every - config.record_every) * step  # the smallest such
    long = RunConfig(steps=100_000, record_every=1)
    assert heldout_every(long) == 500 and heldout_steps(long) == MAX_HELDOUT_POINTS + 1  # step 1 and every 500th
    assert heldout_every(RunConfig(record_every=0)) == 0 and heldout_steps(RunConfig(record_every=0)) == 1


@pytest.mark.parametrize("steps, record_every", [(1, 1), (1, 10), (7, 3), (20, 10), (25, 10), (12, 1)])
def test_the_counted_steps_are_the_steps_measured(steps, record_every):
    config = RunConfig(steps=steps, record_every=record_every, **SMALL)
    measured = [s for s in range(1, steps + 1) if is_heldout_step(s, config)]
    assert heldout_steps(config) == len(measured)
    _, data = train(config)
    heldout = data.series(rd.HELDOUT_METRIC)
    assert heldout.index.tolist() == measured


def test_each_held_out_value_is_the_final_metric_of_the_same_run_stopped_at_that_step():
    """Training is deterministic, so measuring after step k of a 10-step run gives what a 3- or 6-step run of the
    same config reports as its final held-out metric — the measurements change nothing the run computes."""
    config = RunConfig(cell="lstm", steps=10, record_every=3, **SMALL)
    _, data = train(config)
    heldout = data.series(rd.HELDOUT_METRIC)
    assert heldout.index.tolist() == [1, 3, 6, 9, 10]
    for k in (3, 6):
        short, short_data = train(config.replace(steps=k))
        assert heldout[k] == short.final_metric
        assert short_data.series(rd.LOSS).tolist() == data.series(rd.LOSS)[:k].tolist()


def test_smoothing_is_the_trailing_mean_of_the_last_window_steps_leaving_out_nan():
    values = [0.0, 1.0, np.nan, 3.0, 4.0, np.inf, 6.0]
    metrics = pd.DataFrame({"step": range(1, 8), "name": rd.METRIC, "layer": pd.NA, "tensor": "", "value": values})
    smoothed = smoothed_metric(metrics, 3)
    assert smoothed["step"].tolist() == list(range(1, 8))
    assert smoothed["value"].tolist() == pytest.approx([0.0, 0.5, 0.5, 2.0, 3.5, 3.5, 5.0])
    assert smoothing_steps(RunConfig(steps=800)) == 32 and smoothing_steps(RunConfig(steps=10)) == 1


def test_a_long_runs_smoothing_is_the_weighted_mean_of_its_last_whole_blocks(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    run_id = store.create_run({"a": 1})
    writer = store.writer(run_id)
    rng = np.random.default_rng(0)
    values = rng.random(1000)
    values[[5, 300]] = np.nan
    for step, value in enumerate(values, start=1):
        writer.add(step, metrics=[(step, rd.METRIC, None, "", float(value))])
    writer.close("completed", {})
    blocks = store.block_means(run_id, rd.METRIC)
    steps = np.arange(1, 1001)
    expected = pd.Series(values).groupby(steps // CHART_BLOCK)
    assert blocks["step"].tolist() == expected.apply(lambda s: steps[s.index].max()).tolist()
    assert blocks["value"].tolist() == pytest.approx(expected.mean().tolist())
    assert blocks["count"].tolist() == expected.count().tolist()
    smoothed = smoothed_blocks(blocks, 2 * CHART_BLOCK)  # two blocks
    for i in (1, 4, 7):
        both = values[(steps // CHART_BLOCK >= i - 1) & (steps // CHART_BLOCK <= i)]
        assert smoothed["value"][i] == pytest.approx(np.nanmean(both))


def test_the_metric_chart_draws_training_smoothed_and_held_out_with_a_checkbox_for_smoothing(tmp_path):
    config = RunConfig(steps=50, record_every=10, **SMALL)
    store = Store(tmp_path / "runs.sqlite")
    run_id = run_into_store(config, store).run_id
    data = lab_chart_data(store, run_id)
    full = store.load(run_id)
    assert data.heldout["step"].tolist() == [1, 10, 20, 30, 40, 50]
    assert data.heldout["value"].tolist() == full.series(rd.HELDOUT_METRIC).tolist()
    assert data.metric_smoothed["value"].tolist() == pytest.approx(
        full.series(rd.METRIC).rolling(smoothing_steps(config), min_periods=1).mean().tolist())
    in_memory = lab_chart_data_from_memory(train(config)[1], config)
    pd.testing.assert_frame_equal(in_memory.metric_smoothed, data.metric_smoothed)
    pd.testing.assert_frame_equal(in_memory.heldout, data.heldout)

    spec = charts.metric_chart(data).to_dict()
    [param] = spec["params"]
    assert param["name"] == charts.SMOOTH_PARAM and param["value"] is True and param["bind"]["input"] == "checkbox"
    assert param["bind"]["name"].startswith("Smooth the training-batch accuracy (mean of the last 2 steps)")
    smoothed = charts.smoothed_label(2)
    line = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "line")
    assert line["transform"] == [{"filter": f"smooth || datum.series !== '{smoothed}'"}]
    scale = line["encoding"]["color"]["scale"]
    assert dict(zip(scale["domain"], scale["range"])) == {"training batch": LIGHT_BLUE, smoothed: BLUE,
                                                          "held-out batch": GREEN}
    assert "held-out batch: 512 fixed sequences no step trains on, measured every 10 steps" in \
        spec["title"]["subtitle"][0]


def test_a_long_runs_block_means_are_read_once_per_block_as_it_grows(tmp_path, monkeypatch):
    """A live long run is read again on every poll; its complete blocks come from memory after the first read,
    and the smoothed series is the same as from reading every block anew."""
    store = Store(tmp_path / "runs.sqlite")
    run_id = store.create_run(RunConfig(steps=20_000).to_dict())
    writer = store.writer(run_id)
    values = np.random.default_rng(1).random(20_000)
    values[[130, 131, 4000]] = np.nan

    def write(first: int, last: int) -> None:
        for step in range(first, last + 1):
            writer.add(step, metrics=[(step, rd.METRIC, None, "", float(values[step - 1]))])
        writer.flush()

    write(1, 17_000)
    reads = []
    real = Store.block_means
    monkeypatch.setattr(Store, "block_means", lambda self, *a, **k: reads.append(k.get("from_step", 0))
                        or real(self, *a, **k))
    first = lab_chart_data(store, run_id)
    write(17_001, 17_300)
    second = lab_chart_data(store, run_id)
    assert reads == [0, 17_000 // CHART_BLOCK * CHART_BLOCK]  # the second poll reads from its last block only
    whole = smoothed_blocks(real(store, run_id, rd.METRIC), smoothing_steps(RunConfig(steps=20_000)))
    assert second.metric_smoothed["value"].tolist() == pytest.approx(
        whole.set_index("step").loc[second.metric_smoothed["step"], "value"].tolist())
    assert len(second.metric_smoothed) >= len(first.metric_smoothed)
