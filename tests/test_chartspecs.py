"""The lab's chart specs as the browser gets them: the same spec from poll to poll of a live run, so the browser
swaps rows into the charts it shows instead of building them again; what changes (the subtitle) comes apart."""

import json

import pytest

from diagnostics import charts
from diagnostics.chartdata import lab_chart_data_from_memory
from diagnostics.chartspecs import chart_spec, lab_chart_specs
from diagnostics.config import RunConfig
from diagnostics.train import train

LIVE = RunConfig(cell="lstm", num_layers=2, hidden_size=8, batch_size=8, seq_len=6, steps=40, record_every=5)


@pytest.fixture(scope="module")
def polls():
    """Chart data of one run as two polls of it saw it: after 20 and after 40 steps."""
    _, run = train(LIVE)
    early = run.__class__(**{name: getattr(run, name)[getattr(run, name)["step"] <= 20].reset_index(drop=True)
                             for name in ("metrics", "time_grads", "gates", "events")})
    return lab_chart_data_from_memory(early, LIVE), lab_chart_data_from_memory(run, LIVE)


def test_a_live_runs_specs_stay_the_same_while_its_rows_grow(polls):
    early, late = (lab_chart_specs(data) for data in polls)
    names = [[spec.name for spec in row] for row in early]
    assert names == [["loss_chart", "metric_chart"], ["grad_norm_chart", "time_profile_chart"],
                     ["time_grad_heatmap"], ["weight_chart", "update_ratio_chart"],
                     ["spectral_chart", "saturation_chart"]]
    for row_early, row_late in zip(early, late):
        for a, b in zip(row_early, row_late):
            assert json.dumps(a.spec, sort_keys=True) == json.dumps(b.spec, sort_keys=True), a.name
            assert list(a.datasets) == list(b.datasets) == [f"data-{k}" for k in range(len(a.datasets))]
    loss_early, loss_late = early[0][0], late[0][0]
    assert loss_early.datasets["data-0"]["step"].max() == 20 and loss_late.datasets["data-0"]["step"].max() == 40
    profile = [early[1][1].notes, late[1][1].notes]
    assert "at step 20" in profile[0][1] and "at step 40" in profile[1][1]  # the changing text, drawn apart


def test_a_spec_is_the_charts_own_with_its_data_named_by_place(polls):
    data = polls[1]
    spec = chart_spec(charts.grad_norm_chart(data), "grad_norm_chart")
    own = charts.grad_norm_chart(data).to_dict()
    assert spec.notes == tuple(own["title"]["subtitle"]) and "subtitle" not in spec.spec["title"]
    assert spec.spec["title"]["text"] == own["title"]["text"] == "Gradient norms"
    own_rows = sorted(len(rows) for rows in own["datasets"].values())
    assert sorted(len(frame) for frame in spec.datasets.values()) == own_rows  # the same rows, one name each
    layer_names = {node["data"]["name"] for node in spec.spec["layer"]}
    assert layer_names == set(spec.datasets)
    assert "config" not in spec.spec  # Altair's 300-pixel default view: the column sets the width
    with_data = spec.with_data()
    assert set(with_data["datasets"]) == set(spec.datasets) and "datasets" not in spec.spec


def test_scrubbing_moves_the_heatmaps_marker_without_building_it_again(polls):
    from diagnostics.chartdata import at_step
    from diagnostics.chartspecs import at_step_specs

    data = polls[1]
    specs = lab_chart_specs(data)
    heatmap = specs[2][0]
    [marker] = [name for name, rows in heatmap.datasets.items() if list(rows.columns) == ["profile_step"]]
    assert heatmap.datasets[marker]["profile_step"].tolist() == [40]
    profile = data.time_profile.assign(step=5)
    scrubbed = at_step_specs(specs, at_step(data, profile, 5))
    moved = scrubbed[2][0]
    assert moved.spec is heatmap.spec  # the same spec: the browser keeps the view and swaps one row
    assert moved.datasets[marker]["profile_step"].tolist() == [5]
    assert any(note.startswith("white dashed rule: step 5,") for note in moved.notes)
    others = [name for name in heatmap.datasets if name != marker]
    assert all(moved.datasets[name] is heatmap.datasets[name] for name in others)
    assert scrubbed[0] == specs[0]  # the loss chart is untouched
