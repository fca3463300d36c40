"""Gates page through Streamlit's AppTest, on a real store of small trained runs."""

import json

import pytest
import torch
from streamlit.testing.v1 import AppTest

from diagnostics.config import RunConfig
from diagnostics.inspect_gates import TRAIN_COMMAND
from diagnostics.model import build
from diagnostics.runner import load_trained_model, run_into_store
from diagnostics.store import Store
from tests.apptest_charts import charts
from tests.markdown import shown

PAGE = "../app_pages/gates.py"
SMALL = dict(hidden_size=8, batch_size=8, seq_len=5, steps=3)
OVER_TRAINING = "The same sentence over training"
LSTM_CHARTS = [OVER_TRAINING, "input gate", "candidate gate", "forget gate", "output gate", "State norm over time",
               "Singular vs plural: |h_t(sing) − h_t(plur)|", "Units carrying number (h_t, last step)",
               "Singular vs plural: |c_t(sing) − c_t(plur)|", "Units carrying number (c_t, last step)"]
RNN_CHARTS = [OVER_TRAINING, "Hidden state h_t (tanh)", "Saturated hidden units",
              "Singular vs plural: |h_t(sing) − h_t(plur)|", "Units carrying number (h_t, last step)"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with a trained LSTM run, then a trained vanilla RNN run (the newest)."""
    path = tmp_path_factory.mktemp("gates") / "runs.sqlite"
    store = Store(path)
    ids = {}
    for cell in ("lstm", "rnn"):
        summary = run_into_store(RunConfig(cell=cell, **SMALL), store)
        ids[cell] = summary.run_id
    store.close()
    return path, ids


def open_page(monkeypatch, db, run: str | None = None) -> AppTest:
    monkeypatch.setenv("GFL_DB", str(db))
    at = AppTest.from_file(PAGE, default_timeout=30)
    if run is not None:
        at.query_params["run"] = run
    return at.run()


def expected_pair(db, run_id: int, seed: int):
    """Tokens and was/were probabilities computed directly from the stored weights."""
    model, _ = load_trained_model(Store(db), run_id)
    task = model.task
    singular, plural = task.pair(torch.Generator().manual_seed(seed))
    out = {}
    with torch.no_grad():
        for name, inputs in (("singular", singular), ("plural", plural)):
            logits, trace = model(inputs)
            out[name] = ([task.vocab[i] for i in inputs[0].tolist()], torch.softmax(logits[0].double(), -1), trace)
    return out


def test_newest_run_by_default_shows_the_rnn_views(monkeypatch, trained):
    db, ids = trained
    at = open_page(monkeypatch, db)
    assert not at.exception and not at.error
    assert at.selectbox[0].value == ids["rnn"]
    assert at.selectbox[0].options[0].startswith(f"#{ids['rnn']} · completed · rnn-tanh H8x1")
    specs = charts(at)
    assert [s["title"]["text"] for s in specs] == RNN_CHARTS

    direct = expected_pair(db, ids["rnn"], seed=0)
    h = torch.stack(direct["singular"][2].hiddens[0])[:, 0, :].double()  # (T, H)
    rows = specs[2]["rows"].sort_values("t")
    assert rows["share"].tolist() == pytest.approx((h.abs() > 0.99).double().mean(1).tolist())
    hits = int((h.abs() > 0.99).sum())
    assert f"Saturated over the whole sentence: {hits} of {h.numel()} unit-steps" in at.caption[-1].value
    heat = specs[1]["rows"].sort_values(["t", "unit"])
    assert heat["value"].tolist() == pytest.approx(h.reshape(-1).tolist(), abs=1e-6)


def test_run_query_param_selects_the_lstm_run(monkeypatch, trained):
    db, ids = trained
    at = open_page(monkeypatch, db, run=str(ids["lstm"]))
    assert not at.exception and not at.warning
    assert at.selectbox[0].value == ids["lstm"]
    specs = charts(at)
    assert [s["title"]["text"] for s in specs] == LSTM_CHARTS

    direct = expected_pair(db, ids["lstm"], seed=0)
    (s_tokens, s_p, s_trace), (p_tokens, p_p, p_trace) = direct["singular"], direct["plural"]
    # the sentence as chips, subject highlighted, with the prediction and its probability
    singular_line, plural_line = at.markdown[0].value, at.markdown[1].value
    assert singular_line.startswith("**singular:** :gray-badge[the] :orange-badge[" + s_tokens[1] + "]")
    assert all(f"-badge[{tok}]" in singular_line for tok in s_tokens)
    assert f":orange-badge[{p_tokens[1]}]" in plural_line
    verb = "were" if s_p[1] > s_p[0] else "was"
    assert singular_line.endswith(f"-badge[{verb} {s_p.max().item():.0%}]")
    table = at.dataframe[0].value
    assert table["sentence"].tolist() == ["singular", "plural"]
    assert table["subject"].tolist() == [s_tokens[1], p_tokens[1]]
    assert table["expected"].tolist() == ["was", "were"]
    assert table["P(was)"].tolist() == pytest.approx([s_p[0].item(), p_p[0].item()])

    # gate heatmap data is the trace's forget gate of the singular sentence
    forget = next(s for s in specs if s["title"]["text"] == "forget gate")["rows"].sort_values(["t", "unit"])
    expected = torch.stack(s_trace.gates[0]["forget"])[:, 0, :].double()
    assert forget["value"].tolist() == pytest.approx(expected.reshape(-1).tolist(), abs=1e-6)
    assert forget["token"].tolist()[::8] == s_tokens

    # the top-ranked cell unit is the one whose c differs most at the last step
    c_gap = (s_trace.cells[0][-1][0] - p_trace.cells[0][-1][0]).abs()
    bars = specs[9]["rows"]
    assert bars["unit"].iloc[0] == int(c_gap.argmax()) and len(bars) == 8  # top-k defaults to min(10, H)
    assert bars["difference"].iloc[0] == pytest.approx(c_gap.max().item(), abs=1e-6)
    assert f"(unit {int(c_gap.argmax())}); before the subject it is 0." in at.markdown[3].value


def test_sentence_seed_and_version_change_what_is_shown(monkeypatch, trained):
    db, ids = trained
    at = open_page(monkeypatch, db, run=str(ids["lstm"]))
    at.number_input(key="gates_seed").set_value(5).run()
    at.radio(key="gates_version").set_value("plural").run()
    assert not at.exception
    direct = expected_pair(db, ids["lstm"], seed=5)
    p_tokens, _, p_trace = direct["plural"]
    assert all(f"-badge[{tok}]" in at.markdown[1].value for tok in p_tokens)
    norms = charts(at)[5]["rows"]
    cell = norms[norms["state"] == "cell state c_t"].sort_values("t")["norm"]
    assert cell.tolist() == pytest.approx(torch.stack(p_trace.cells[0])[:, 0].norm(dim=1).tolist(), abs=1e-6)


def test_picking_a_run_writes_it_into_the_link(monkeypatch, trained):
    db, ids = trained
    at = open_page(monkeypatch, db)
    at.selectbox(key="gates_run").set_value(ids["lstm"]).run()
    assert not at.exception
    assert at.query_params["run"] == str(ids["lstm"])
    assert len(at.get("vega_lite_chart")) == len(LSTM_CHARTS)


def test_unknown_run_in_the_link_falls_back_to_the_newest(monkeypatch, trained):
    db, ids = trained
    at = open_page(monkeypatch, db, run="999")
    assert not at.exception
    assert shown(at.warning[0].value).startswith("Run 999 from the link has no saved weights")
    assert at.selectbox[0].value == ids["rnn"]


def test_empty_store_says_to_train_a_run_first(monkeypatch, tmp_path):
    at = open_page(monkeypatch, tmp_path / "empty.sqlite")
    assert not at.exception
    assert "train one in the Lab first" in shown(at.info[0].value) and TRAIN_COMMAND in shown(at.info[0].value)
    assert not at.get("vega_lite_chart") and not at.selectbox


def test_a_file_that_is_not_a_store_is_an_error_message_not_a_traceback(monkeypatch, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database")
    at = open_page(monkeypatch, bad)
    assert not at.exception
    assert "is not a Gradient Flow Lab store" in shown(at.error[0].value)


def test_other_tasks_show_their_own_example(monkeypatch, tmp_path):
    store = Store(tmp_path / "copy.sqlite")
    run_id = run_into_store(RunConfig(cell="gru", task="copy", **SMALL), store).run_id
    at = open_page(monkeypatch, store.path)
    assert not at.exception
    assert at.info[0].value.startswith(f"Run #{run_id} trains the **copy** task")
    model, _ = load_trained_model(store, run_id)
    inputs, _ = model.task.sample(1, torch.Generator().manual_seed(0))
    assert at.code[0].value == model.task.decode(inputs[0])
    assert [s["title"]["text"] for s in charts(at)] == [OVER_TRAINING, "reset gate", "candidate gate",
                                                          "update gate", "State norm over time"]
    assert not at.radio and not at.slider  # no pair: no version choice, no number ranking


def test_a_diverged_run_warns_and_still_renders_valid_charts(monkeypatch, tmp_path):
    store = Store(tmp_path / "diverged.sqlite")
    config = RunConfig(cell="rnn", activation="relu", init="normal", init_scale=3.0, clip="none", lr=1.0,
                       hidden_size=8, seq_len=30, steps=5)
    summary = run_into_store(config, store)
    assert summary.status == "diverged"
    at = open_page(monkeypatch, store.path)
    assert not at.exception and not at.error
    assert "NaN or infinite states" in shown(at.warning[0].value)
    assert at.markdown[0].value.endswith(":gray-badge[no prediction (NaN)]")

    def reject(constant):
        raise AssertionError(f"chart spec holds {constant}, which browsers cannot parse")

    specs = [json.loads(c.proto.spec, parse_constant=reject) for c in at.get("vega_lite_chart")]
    assert [s["title"]["text"] for s in specs] == [OVER_TRAINING, "Hidden state h_t (relu)", *RNN_CHARTS[2:]]


def test_the_step_slider_shows_the_weights_kept_at_that_step_and_writes_it_into_the_link(monkeypatch, trained):
    db, ids = trained
    store = Store(db)
    assert store.checkpoint_steps(ids["lstm"]) == [0, 1, 2, 3]
    at = open_page(monkeypatch, db, run=str(ids["lstm"]))
    slider = at.select_slider(key=f"gates_step_{ids['lstm']}")
    assert slider.options == ["0 — initial weights, before training", "1", "2", "3 — last kept step"]
    assert slider.value == 3 and "Weights after step 3 of 3." in at.caption[1].value
    slider.set_value(0).run()
    assert not at.exception and at.query_params["step"] == "0"
    assert at.caption[1].value.startswith("Initial weights, before the first training step of 3.")
    initial, _ = build(RunConfig(cell="lstm", **SMALL))  # what step 0 holds: the model before any step
    singular, _ = initial.task.pair(torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, trace = initial(singular)
    forget = next(s for s in charts(at) if s["title"]["text"] == "forget gate")["rows"].sort_values(["t", "unit"])
    expected = torch.stack(trace.gates[0]["forget"])[:, 0, :].double()
    assert forget["value"].tolist() == pytest.approx(expected.reshape(-1).tolist(), abs=1e-6)


def test_the_over_training_chart_reads_every_kept_checkpoint(monkeypatch, trained):
    db, ids = trained
    at = open_page(monkeypatch, db, run=str(ids["lstm"]))
    chart = next(s for s in charts(at) if s["title"]["text"] == OVER_TRAINING)
    rows = next(iter(chart["datasets"].values()))
    assert sorted(rows["step"].unique().tolist()) == [0, 1, 2, 3]
    for step in (0, 3):
        model, _ = load_trained_model(Store(db), ids["lstm"], step)
        singular, plural = model.task.pair(torch.Generator().manual_seed(0))
        with torch.no_grad():
            p_was = torch.softmax(model(singular)[0][0].double(), -1)[0].item()
            p_were = torch.softmax(model(plural)[0][0].double(), -1)[1].item()
        at_step = rows[rows["step"] == step].set_index("series")["value"]
        assert at_step["P(right verb), singular"] == pytest.approx(p_was, abs=1e-6)
        assert at_step["P(right verb), plural"] == pytest.approx(p_were, abs=1e-6)
    assert {"forget gate after the subject, all units", "input gate at the subject, all units"} <= set(rows["series"])
    rule = [d for d in chart["datasets"].values() if list(d.columns) == ["step"]]
    assert rule[0]["step"].tolist() == [3]  # the step shown


@pytest.mark.parametrize("step, warning", [
    ("7", "This run kept no weights at step 7; it keeps them at steps 0, 1, 2, 3. Showing the nearest, step 3."),
    ("-1", "step '-1' from the link is not a training step: steps are whole numbers from 0; showing the last kept "
           "step 3."),
    ("![x](http://example.invalid/p.png)", "step '![x](http://example.invalid/p.png)' from the link is not a "
                                            "training step"),
    ("9" * 5000, "step '999"),
])
def test_a_step_in_the_link_that_was_not_kept_or_is_not_a_step_says_so_and_shows_a_kept_one(monkeypatch, trained,
                                                                                           step, warning):
    db, ids = trained
    monkeypatch.setenv("GFL_DB", str(db))
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.query_params["run"] = str(ids["lstm"])
    at.query_params["step"] = step
    at.run()
    assert not at.exception
    assert shown(at.warning[0].value).startswith(warning)
    assert "![" not in at.warning[0].value and "](" not in at.warning[0].value  # escaped: no image, no link
    assert at.select_slider(key=f"gates_step_{ids['lstm']}").value == 3
