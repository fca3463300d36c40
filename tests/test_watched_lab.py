"""A run `watch` recorded in a user's own script, drawn by the Lab: its lanes named by module, layer and direction,
no task of its own, and followed live while its script (another process) still trains it."""

import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from diagnostics import rundata as rd
from diagnostics import watch
from diagnostics.chartdata import GRAD_PRE_CLIP, lab_chart_data
from diagnostics.charts import WATCHED_CHART_ROWS
from diagnostics.chartspecs import lab_chart_specs
from diagnostics.store import Store, StoreError
from tests.apptest_charts import charts
from tests.markdown import shown

ROOT = Path(__file__).resolve().parents[1]
LANES = ("lstm layer 0", "lstm layer 0 reverse", "lstm layer 1", "lstm layer 1 reverse")


def example_run(db: Path, *args: str) -> int:
    """The README's practitioner example (2-layer bidirectional LSTM), short, into `db`; its run id."""
    subprocess.run([sys.executable, "examples/watch_lstm.py", "--steps", "30", "--seq-len", "12", "--every", "5",
                    "--db", str(db), *args], check=True, capture_output=True, cwd=ROOT, timeout=600,
                   env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    with Store(db, create=False) as store:
        return store.list_runs()[0].id


@pytest.fixture(scope="module")
def exploded(tmp_path_factory):
    db = tmp_path_factory.mktemp("watched") / "runs.sqlite"
    return db, example_run(db, "--no-clip")


def spec_rows(chart) -> pd.DataFrame:
    return pd.concat(chart.datasets.values(), ignore_index=True)


def test_a_watched_runs_charts_name_its_lanes_and_sum_their_parameters(exploded):
    db, run_id = exploded
    with Store(db, create=False) as store:
        data = lab_chart_data(store, run_id)
        full = store.load(run_id)
    assert data.config is None and data.facts.watched and data.facts.task is None
    assert data.facts.lanes == LANES and data.facts.cells == ("lstm",) * 4 and data.facts.T == 12
    assert set(data.grad_norms["series"]) == {*LANES, GRAD_PRE_CLIP}  # it does not clip as far as watch knows
    # A lane's gradient norm is the L2 norm over its parameters' (weight_ih, weight_hh, both biases).
    m = full.metrics[(full.metrics["name"] == rd.GRAD_NORM) & (full.metrics["step"] == 3)]
    for k, lane in enumerate(LANES):
        suffix = "_reverse" if lane.endswith("reverse") else ""
        layer = lane.split()[2]
        params = m[m["tensor"].isin([f"lstm.{p}_l{layer}{suffix}" for p in ("weight_ih", "weight_hh", "bias_ih",
                                                                             "bias_hh")])]
        assert len(params) == 4
        drawn = data.grad_norms.query("step == 3 and series == @lane")["value"].item()
        assert drawn == pytest.approx(math.sqrt((params["value"] ** 2).sum()), rel=1e-6)
    assert sorted(data.time_profile["layer"].unique()) == [0, 1, 2, 3]
    assert set(data.saturation["lane"]) == set(LANES)
    assert {"forget gate (< 0.1)", "hidden units"} <= set(data.saturation["part"])


def test_a_watched_run_gets_every_chart_but_the_metric_and_no_baseline_it_does_not_have(exploded):
    db, run_id = exploded
    with Store(db, create=False) as store:
        specs = lab_chart_specs(lab_chart_data(store, run_id))
    names = [[spec.name for spec in row] for row in specs]
    assert names == [[build.__name__ for build in row] for row in WATCHED_CHART_ROWS]
    charts = {spec.name: spec for row in specs for spec in row}
    assert "metric_chart" not in charts
    loss = charts["loss_chart"]
    assert not any("baseline" in str(label) for label in spec_rows(loss).get("label", pd.Series(dtype=str)))
    assert any("knows no memoryless baseline" in note for note in loss.notes)
    heatmap = charts["time_grad_heatmap"]
    label = heatmap.spec["layer"][0]["encoding"]["y"]["axis"]["labelExpr"]
    assert all(f'"{lane}"' in label for lane in LANES)
    assert "lstm layer 0 at the bottom" in heatmap.notes
    profile = spec_rows(charts["time_profile_chart"])
    assert set(profile.loc[profile["line"] == "measured", "series"]) == set(LANES)
    assert set(profile["line"].dropna()) == {"measured"}  # no gain^(T−t) fit: the loss may read a lane at any step
    assert any(note.startswith("lstm layer 0: largest at t = ") and "no gain fitted" in note
               for note in charts["time_profile_chart"].notes)
    # The lab's thresholds are not drawn: watched verdicts use neither, and the norms' scale is the user's loss's.
    assert not any("exploding threshold" in note for note in charts["grad_norm_chart"].notes)
    assert not any("diagnosis limit" in note for note in charts["saturation_chart"].notes)


def test_mixed_cells_judge_each_lanes_gates_by_its_own_cell_and_draw_no_bound_across_them(tmp_path):
    torch.manual_seed(0)
    model = nn.Module()
    model.rnn = nn.RNN(3, 5, nonlinearity="relu")
    model.gru = nn.GRU(5, 4)
    db = tmp_path / "runs.sqlite"
    with watch(model, every=1, db=db, name="mixed") as w:
        for _ in range(3):
            out, _ = model.gru(model.rnn(torch.randn(7, 2, 3))[0])
            loss = out.pow(2).mean()
            model.zero_grad()
            loss.backward()
            w.step(loss)
    with Store(db, create=False) as store:
        data = lab_chart_data(store, w.run_id)
        specs = {spec.name: spec for row in lab_chart_specs(data) for spec in row}
    assert data.facts.lanes == ("rnn layer 0", "gru layer 0") and data.facts.cells == ("rnn", "gru")
    parts = data.saturation.groupby("lane")["part"].unique().map(sorted).to_dict()
    assert parts == {"gru layer 0": ["hidden units", "reset gate (< 0.1 or > 0.9)", "update gate (< 0.1)"],
                     "rnn layer 0": ["hidden units"]}
    spectral = specs["spectral_chart"]
    assert any("holds for vanilla RNN layers only (theirs: 1/γ = 1)" in note for note in spectral.notes)


def open_lab(db: Path, run_id: int) -> AppTest:
    at = AppTest.from_file("../dashboard.py", default_timeout=60)
    at.query_params["run"] = str(run_id)
    at.switch_page("app_pages/lab.py")
    return at.run()


def charts_drawn(at: AppTest) -> list[str]:
    return [chart["title"]["text"] for chart in charts(at)]


def test_the_lab_draws_a_watched_run_says_where_it_broke_and_what_to_change_in_the_script(exploded, monkeypatch):
    db, run_id = exploded
    monkeypatch.setenv("GFL_DB", str(db))
    with Store(db, create=False) as store:
        first = store.get_run(run_id).summary["first_nonfinite"]
    at = open_lab(db, run_id)
    assert not at.exception
    assert shown(at.info[0].value).startswith(f"Run {run_id}, watched lstm-no-clip: lstm lstm H64x2 bidirectional: "
                                              "recorded by `watch` in a training script")
    assert len(charts_drawn(at)) == 8 and "Gradient back through time" in charts_drawn(at)
    banner = shown(at.error[0].value)
    assert banner.startswith(f"Non-finite values (NaN/Inf) first at step {first['step']}: tensor `")
    assert f"lstm layer {first['layer']}" in banner  # the lane, by the module's own name
    assert any(w.value.startswith(f"Run {run_id} diverged after 30 steps") for w in at.warning)
    assert any(m.value.startswith("**Problem: exploding gradients (a value went non-finite)") for m in at.markdown)
    assert any("What to change in your script" in m.value for m in at.markdown)
    assert any("torch.nn.utils.clip_grad_norm_(model.parameters(), 1)" in c.value for c in at.code)
    assert not any(b.label.startswith(("Clip", "Use", "Lower")) for b in at.button)  # no config to change


SLOW_SCRIPT = textwrap.dedent("""
    import sys, time
    import torch
    from torch import nn
    from diagnostics import watch

    torch.manual_seed(0)
    model = nn.Module()
    model.rnn = nn.GRU(3, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, every=5, db=sys.argv[1], name="slow") as w:
        for step in range(int(sys.argv[2])):
            out, _ = model.rnn(torch.randn(10, 4, 3))
            loss = out[-1].pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            w.step(loss)
            optimizer.step()
            time.sleep(0.1)
""")


def test_the_lab_follows_a_watched_run_while_its_script_trains_it_in_another_process(tmp_path, monkeypatch):
    db = tmp_path / "runs.sqlite"
    monkeypatch.setenv("GFL_DB", str(db))
    script = subprocess.Popen([sys.executable, "-c", SLOW_SCRIPT, str(db), "60"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        runs = []
        while time.monotonic() < deadline and not (runs and runs[0].steps_done >= 2):
            time.sleep(0.1)
            try:
                with Store(db, create=False) as store:
                    runs = store.list_runs()
            except StoreError:  # the script has not made its store yet
                pass
        run_id = runs[0].id
        at = open_lab(db, run_id)
        assert not at.exception

        def recorded() -> int:
            texts = [shown(i.value) for i in at.info if "recorded so far" in shown(i.value)]
            assert texts and "its training script is still training it" in texts[0]
            return int(texts[0].split("step ")[1].split()[0])

        before = recorded()
        assert before >= 2 and "Gradient norms" in charts_drawn(at)
        time.sleep(1.5)
        at.run()
        assert recorded() > before  # the next poll reads what the script committed meanwhile
        assert script.wait(timeout=120) == 0
    finally:
        script.kill()
    at.run()
    assert any(s.value.startswith(f"Run {run_id} completed after 60 steps") for s in at.success)
    assert not any("recorded so far" in shown(i.value) for i in at.info)


def test_a_watched_run_stored_before_watched_verdicts_says_it_was_not_diagnosed(tmp_path, monkeypatch):
    from diagnostics.watching import describe_model

    db = tmp_path / "runs.sqlite"
    monkeypatch.setenv("GFL_DB", str(db))
    model = nn.Module()
    model.rnn = nn.GRU(3, 4)
    with Store(db) as store:
        run_id = store.create_run({}, describe_model(model, "old").to_dict())
        writer = store.writer(run_id)
        writer.add(1, metrics=[(1, rd.LOSS, None, "", 0.5)])
        writer.close("completed", {"status": "completed", "steps_done": 1, "diagnoses": [], "verdict": None})
    at = open_lab(db, run_id)
    assert not at.exception
    assert any(i.value.startswith("Not diagnosed: watch() recorded this run before") for i in at.info)
    assert not any("No exploding or vanishing gradients diagnosed" in m.value for m in [*at.markdown, *at.info])


def test_a_watched_lane_keeps_its_layers_colour_and_a_reverse_lane_gets_its_own():
    from diagnostics.palette import LAYER_COLOURS, NONFINITE_RED, REVERSE_COLOURS, colour

    assert [colour(lane) for lane in LANES] == [LAYER_COLOURS[0], REVERSE_COLOURS[0], LAYER_COLOURS[1],
                                                REVERSE_COLOURS[1]]
    assert colour("layer 1") == colour("encoder.rnn layer 1") == LAYER_COLOURS[1]
    assert len({colour(lane) for lane in LANES}) == 4 and NONFINITE_RED not in {colour(lane) for lane in LANES}


def test_lanes_of_two_modules_get_colours_of_their_own_in_one_chart():
    from diagnostics.palette import series_scale

    scale = series_scale(["enc layer 0", "dec layer 0", "enc layer 1", "dec layer 1", "global, pre-clip"])
    assert len(set(scale.range)) == 5 and scale.range[0] == colour_of("layer 0")
    lab = series_scale(["layer 0", "layer 1", "readout", "global, pre-clip", "global, post-clip"])
    assert lab.range == [colour_of(n) for n in lab.domain]  # the lab's series keep their fixed colours


def colour_of(name):
    from diagnostics.palette import colour
    return colour(name)
