"""Runs page through AppTest, on a real store holding real (small) runs."""

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from diagnostics.config import RunConfig
from diagnostics.runner import run_into_store
from diagnostics.store import Store
from tests.apptest_charts import charts

SMALL = RunConfig(hidden_size=8, batch_size=8, seq_len=5, steps=6, record_every=2)


@pytest.fixture
def stored(tmp_path, monkeypatch):
    db = tmp_path / "runs.sqlite"
    monkeypatch.setenv("GFL_DB", str(db))
    store = Store(db)
    ids = [run_into_store(config, store).run_id
           for config in (SMALL, SMALL.replace(cell="lstm"), SMALL.replace(cell="lstm", lr=0.5))]
    return store, ids


def open_runs() -> AppTest:
    at = AppTest.from_file("../dashboard.py", default_timeout=60)
    at.switch_page("app_pages/runs.py")
    return at.run()


def test_table_lists_every_run_and_filters_by_cell(stored):
    store, ids = stored
    at = open_runs()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["id"]) == ids[::-1]
    assert list(table["status"]) == ["completed"] * 3 and list(table["steps done"]) == [6, 6, 6]
    at.multiselect[0].select("lstm").run()
    assert sorted(at.dataframe[0].value["id"]) == ids[1:]


def test_comparing_two_runs_highlights_the_field_that_differs(stored):
    _, ids = stored
    at = open_runs()
    at.multiselect[3].select(ids[1]).select(ids[2]).run()
    assert not at.exception
    differences = at.dataframe[1].value
    assert list(differences.index) == ["lr"]
    assert sorted(differences.iloc[0].tolist()) == ["0.1", "0.5"]
    [chart] = charts(at)
    assert chart["title"]["text"] == "loss of the compared runs" and chart["title"]["subtitle"] == []
    rows = pd.concat(chart["datasets"].values())
    assert {run.split()[0] for run in rows["run"]} == {f"#{ids[1]}", f"#{ids[2]}"}
    assert sorted(set(rows["step"])) == [1, 2, 3, 4, 5, 6]  # the loss of every step


def test_one_run_offers_open_download_and_delete_with_confirmation(stored):
    store, ids = stored
    at = open_runs()
    at.multiselect[3].select(ids[0]).run()
    assert any(f"lab?run={ids[0]}" in m.value for m in at.markdown)
    delete = next(b for b in at.button if b.label == "Delete")
    assert delete.disabled  # nothing is deleted without the confirmation box
    at.checkbox[0].check().run()
    next(b for b in at.button if b.label == "Delete").click().run()
    assert [r.id for r in store.list_runs()] == ids[:0:-1]


def test_empty_store_says_how_to_make_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GFL_DB", str(tmp_path / "empty.sqlite"))
    at = open_runs()
    assert "No runs stored yet" in at.info[0].value
