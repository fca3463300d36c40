"""Runs page through AppTest, on a real store holding real (small) runs."""

import json
import time

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from diagnostics import rundata as rd
from diagnostics.compare import run_label
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
    headers = {name: column.get("label") for name, column in json.loads(at.dataframe[0].proto.columns).items()}
    assert (headers["seq_len"], headers["init_scale"], headers["lr"]) == ("Sequence length", "Init scale of W_hh",
                                                                          "Learning rate")
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
    shown = {c["title"]["text"].split(" of the")[0].split(" at ")[0]: c for c in charts(at)}
    loss, heldout, profile = (shown[k] for k in ("loss", "held-out metric", "gradient back through time"))
    assert loss["title"]["text"] == "loss of the compared runs" and loss["title"]["subtitle"] == []
    rows = pd.concat(loss["datasets"].values())
    assert set(rows["run"]) == {f"#{ids[1]} lr 0.1", f"#{ids[2]} lr 0.5"}  # named by the field that differs
    assert sorted(set(rows["step"])) == [1, 2, 3, 4, 5, 6]  # the loss of every step
    assert len(shown) == 3  # what a comparison shows first
    assert sorted(set(pd.concat(heldout["datasets"].values())["step"])) == [1, 2, 4, 6]  # record_every 2
    assert profile["title"]["text"] == "gradient back through time at training step 1 (layer 0)"
    at.select_slider(key="compare-step").set_value(4).run()
    profile = next(c for c in charts(at) if c["title"]["text"].startswith("gradient back through time at"))
    assert set(pd.concat(profile["datasets"].values())["run"]) == {f"#{ids[1]} lr 0.1 (step 4)",
                                                                    f"#{ids[2]} lr 0.5 (step 4)"}
    at.multiselect(key="compare-charts").set_value([rd.WEIGHT_NORM, rd.SIGMA_MAX]).run()
    assert [c["title"]["text"] for c in charts(at)] == ["weight norm ‖W‖ of the compared runs",
                                                        "σ_max(W_hh) of the compared runs"]


def test_a_visitor_cannot_delete_a_run_another_made(stored):
    store, ids = stored  # made from a shell, by no browser session
    at = open_runs()
    at.multiselect[3].select(ids[0]).run()
    lab, gates = [link.proto for link in at.get("page_link")]
    assert (lab.page, lab.query_string) == ("lab", f"run={ids[0]}")
    kept = store.checkpoint_steps(ids[0])
    assert (gates.page, gates.query_string) == ("gates", f"run={ids[0]}") and kept[0] == 0
    assert gates.label.endswith(f"with the weights it kept at {len(kept)} steps from 0 to {kept[-1]}")
    assert any(f"Only the browser session that made run {ids[0]} can delete it" in c.value for c in at.caption)
    assert at.checkbox[0].disabled and next(b for b in at.button if b.label == "Delete").disabled
    at.text_input[0].input("guess").run()  # no operator token is set on this server: nothing opens it
    assert next(b for b in at.button if b.label == "Delete").disabled
    assert [r.id for r in store.list_runs()] == ids[::-1]


def test_the_operator_deletes_with_the_token_and_a_wrong_token_does_not(stored, monkeypatch):
    store, ids = stored
    monkeypatch.setenv("GFL_OPERATOR_TOKEN", "s3cret")
    at = open_runs()
    at.multiselect[3].select(ids[0]).run()
    at.text_input[0].input("wrong").run()
    assert at.checkbox[0].disabled
    at.text_input[0].input("s3cret").run()
    at.checkbox[0].check().run()
    next(b for b in at.button if b.label == "Delete").click().run()
    assert [r.id for r in store.list_runs()] == ids[:0:-1]


def test_the_session_that_made_a_run_deletes_it_with_confirmation(stored):
    from ui.common import _manager_for

    store, ids = stored
    manager = _manager_for(str(store.path))  # the server's one manager, as the pages get it
    made = manager.submit(SMALL.replace(seed=5), owner="tab-1")
    while made.state != "done":
        time.sleep(0.05)
    at = AppTest.from_file("../dashboard.py", default_timeout=60)
    at.session_state["session_id"] = "tab-1"
    at.switch_page("app_pages/runs.py").run()
    at.multiselect[3].select(made.run_id).run()
    assert not at.text_input  # its own run: no token asked
    delete = next(b for b in at.button if b.label == "Delete")
    assert delete.disabled  # nothing is deleted without the confirmation box
    at.checkbox[0].check().run()
    next(b for b in at.button if b.label == "Delete").click().run()
    assert [r.id for r in store.list_runs()] == ids[::-1]


def test_empty_store_says_how_to_make_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GFL_DB", str(tmp_path / "empty.sqlite"))
    at = open_runs()
    assert "No runs stored yet" in at.info[0].value


def test_a_store_of_thousands_of_runs_lists_the_newest_with_their_results(tmp_path, monkeypatch):
    """3 000 runs (their rows written as a writer would, each with a full summary): the page lists the newest
    SHOWN_RUNS with the two summary numbers it shows, and says how many are stored."""
    from diagnostics.compare import SHOWN_RUNS

    db = tmp_path / "runs.sqlite"
    monkeypatch.setenv("GFL_DB", str(db))
    store = Store(db)
    template = run_into_store(SMALL, store)
    summary = store.get_run(template.run_id).summary
    for k in range(2, 3001):
        run_id = store.create_run(SMALL.replace(seed=k).to_dict())
        store.finish(run_id, "completed", 6, {**summary, "final_loss": float(k)})
    at = open_runs()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == SHOWN_RUNS and list(table["id"][:2]) == [3000, 2999]
    assert list(table["final loss"][:2]) == [3000.0, 2999.0]
    assert table["held-out metric"].iloc[0] == pytest.approx(summary["final_metric"])
    assert f"{SHOWN_RUNS} of {SHOWN_RUNS} runs (the newest {SHOWN_RUNS} of 3000 stored)" in at.caption[0].value


def watched_run(store_path, name="my-model"):
    """A run recorded by `watch` in a user's own loop, into the dashboard's store."""
    import torch
    from torch import nn

    from diagnostics import watch

    torch.manual_seed(0)
    model = nn.Module()
    model.rnn = nn.GRU(3, 4, bidirectional=True)
    with watch(model, every=2, db=store_path, name=name) as w:
        for _ in range(3):
            out, _ = model.rnn(torch.randn(5, 2, 3))
            loss = out.pow(2).mean()
            loss.backward()
            w.step(loss)
    return w.run_id


def test_a_watched_run_is_listed_by_its_model_and_opens_in_the_lab(stored):
    store, ids = stored
    watched = watched_run(store.path)
    at = open_runs()
    table = at.dataframe[0].value
    assert list(table["id"])[0] == watched and table.iloc[0]["cell"] == "gru" and pd.isna(table.iloc[0]["task"])
    assert list(table["source"]) == ["watch: my-model", "lab", "lab", "lab"]
    at.multiselect[3].select(watched).run()
    assert not at.exception
    assert at.subheader[0].value == f"#{watched} watched my-model: rnn gru H4x1 bidirectional"
    [lab] = [link for link in at.get("page_link") if link.proto.page == "lab"]
    assert lab.proto.label == f"Open run {watched} in the Lab: its charts"
    assert lab.proto.query_string == f"run={watched}"
    at.multiselect[3].select(ids[0]).run()  # beside a lab run: its charts overlaid, no settings set beside
    assert not at.exception and at.subheader[0].value == "Comparing 2 runs"
    assert any(c.value.startswith(f"Run #{watched}: recorded by `watch` in a training script") for c in at.caption)
    assert not at.dataframe[1:]  # no settings table: a watched run has no settings
    loss = next(c for c in charts(at) if c["title"]["text"].startswith("loss of"))
    assert set(loss["rows"]["run"]) == {f"#{watched} watched my-model: rnn gru H4x1 bidirectional",
                                        run_label(store.get_run(ids[0]))}
    # The watched run has no held-out metric; the lab run keeps the colour it has in the loss chart.
    metric = next(c for c in charts(at) if c["title"]["text"].startswith("held-out metric of"))
    assert set(metric["rows"]["run"]) == {run_label(store.get_run(ids[0]))}
    assert metric["encoding"]["color"]["scale"] == loss["encoding"]["color"]["scale"]
