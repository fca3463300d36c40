"""A lesson's page charts, on real runs of its variants whose outcome is known."""

import pandas as pd
import pytest

from diagnostics import rundata as rd
from diagnostics.chartdata import lab_chart_data
from diagnostics.lesson_compare import FIRST, LAST, end_profiles, latest_profiles, lesson_specs
from diagnostics.lessons import LESSONS, lesson
from diagnostics.runner import run_into_store
from diagnostics.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


def stored(store, chosen, steps=None):
    ids = {}
    for variant in chosen.variants:
        config = variant.config if steps is None else variant.config.replace(steps=steps)
        ids[variant.label] = run_into_store(config, store).run_id
    return ids


def test_every_lesson_with_variants_compares_quantities_its_runs_record():
    from diagnostics.compare_charts import QUANTITIES
    for item in LESSONS:
        assert item.compare and set(item.compare) <= set(QUANTITIES), item.slug
    assert {item.slug for item in LESSONS if item.profile_ends} == {"irnn", "forget-bias", "adam-hides-vanishing"}


def test_adam_and_sgd_start_from_the_same_gradient_through_time_and_only_sgd_keeps_it(tmp_path):
    """Lesson 10: at the first step both runs have the same gradients (the optimiser has not acted yet); on
    its last recorded step the SGD run's profile is still the first one's shape while Adam's has moved."""
    store = Store(tmp_path / "runs.sqlite")
    ids = stored(store, lesson("adam-hides-vanishing"), steps=60)
    rows = end_profiles(store, ids)
    first = rows[rows["at"] == FIRST].pivot(index="t", columns="run", values="value")
    assert first["Adam"].tolist() == first["SGD"].tolist()
    assert set(rows[rows["at"] == FIRST]["step"]) == {1} and set(rows[rows["at"] == LAST]["step"]) == {60}
    last = rows[rows["at"] == LAST].pivot(index="t", columns="run", values="value")
    assert last["Adam"].tolist() != last["SGD"].tolist()


def test_the_weight_decay_lessons_page_overlays_weight_norm_held_out_and_penalty(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    chosen = lesson("weight-decay")
    ids = stored(store, chosen)
    data = {label: lab_chart_data(store, run_id) for label, run_id in ids.items()}
    specs = lesson_specs(chosen, store, data, ids)
    assert [s.name for s in specs] == ["lesson-weight_norm", "lesson-heldout_metric", "lesson-penalty",
                                       "lesson-profiles"]
    penalty = pd.concat(specs[2].datasets.values())
    by_run = penalty.groupby("run")["value"].max()
    assert by_run["no penalty"] == 0.0 and by_run["λ = 0.005"] > 0  # only the decayed run pays a penalty
    full = store.load(ids["λ = 0.005"])
    decayed = penalty[penalty["run"] == "λ = 0.005"]
    assert decayed["value"].tolist() == full.series(rd.PENALTY).tolist()
    weights = pd.concat(specs[0].datasets.values())
    layer0 = weights[(weights["series"] == "layer 0")].groupby("run")["value"]
    assert layer0.last()["λ = 0.005"] < layer0.first()["λ = 0.005"]  # shrinks below its start (lesson text)
    assert layer0.last()["no penalty"] > layer0.first()["no penalty"]  # grows without the penalty
    profiles = latest_profiles(data)
    assert set(profiles["run"]) == {"no penalty", "λ = 0.005"} and set(profiles["step"]) == {300}
    colours = specs[0].spec["encoding"]["color"]["scale"]
    assert colours["domain"] == ["no penalty", "λ = 0.005"]  # every variant keeps its colour from the start
