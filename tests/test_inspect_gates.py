"""Gates page computations: frames checked against the model's own trace and direct tensor arithmetic."""

import pandas as pd
import pytest
import torch

from diagnostics import inspect_gates as ig
from diagnostics.cells import Trace
from diagnostics.config import RunConfig
from diagnostics.model import build
from diagnostics.store import Store

SEED = 3  # sentence seed used throughout
T = 7  # "the" + subject + seq_len 5 fillers


@pytest.fixture(scope="module")
def lstm():
    """A small LSTM, its task, the probes for SEED and an independent forward pass of the same pair."""
    model, task = build(RunConfig(cell="lstm", hidden_size=8, seq_len=5))
    probes = ig.draw_probes(model, task, SEED)
    singular, plural = task.pair(torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        direct = {"singular": model(singular), "plural": model(plural)}
    return model, task, probes, direct, (singular, plural)


def pivot(df: pd.DataFrame, column: str = "value") -> torch.Tensor:
    """(T, H) tensor from a tidy frame's t × unit rows."""
    wide = df.pivot(index="t", columns="unit", values=column).sort_index().sort_index(axis=1)
    return torch.tensor(wide.to_numpy(), dtype=torch.float64)


def stacked(states: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(states)[:, 0, :].double()


def test_probes_are_the_tasks_pair_with_readable_tokens(lstm):
    _, task, probes, direct, (singular, plural) = lstm
    assert list(probes) == ["singular", "plural"]
    assert torch.equal(probes["singular"].inputs, singular) and torch.equal(probes["plural"].inputs, plural)
    assert probes["singular"].tokens == [task.vocab[i] for i in singular[0].tolist()]
    assert len(probes["singular"].tokens) == T and probes["singular"].tokens[0] == "the"
    s_tok, p_tok = probes["singular"].tokens, probes["plural"].tokens
    differing = [t for t in range(T) if s_tok[t] != p_tok[t]]
    assert differing == [task.subject_position]
    assert (s_tok[1], p_tok[1]) in [(s, p) for s, p in zip(task.vocab[2:10], task.vocab[10:18])]
    assert torch.equal(probes["plural"].outputs, direct["plural"][0])

    tokens = ig.tokens_frame(probes, task)
    assert tokens["t"].tolist() == list(range(1, T + 1))
    assert tokens["singular"].tolist() == s_tok and tokens["plural"].tolist() == p_tok
    assert tokens.loc[task.subject_position, "role"] == "subject" and tokens["role"].iloc[-1].startswith("last")


def test_gate_frame_equals_the_trace_gates(lstm):
    _, _, probes, direct, _ = lstm
    frame = ig.gate_frame(probes["singular"], 0)
    trace: Trace = direct["singular"][1]
    assert list(dict.fromkeys(frame["gate"])) == ["input", "forget", "candidate", "output"]
    assert len(frame) == 4 * T * 8
    for name in ("input", "forget", "candidate", "output"):
        torch.testing.assert_close(pivot(frame[frame["gate"] == name]), stacked(trace.gates[0][name]))
    first = frame[(frame["gate"] == "forget") & (frame["t"] == 2)]
    assert set(first["token"]) == {probes["singular"].tokens[1]} and set(first["step"]) == {
        f"2 {probes['singular'].tokens[1]}"}


def test_vanilla_rnn_has_an_empty_gate_frame():
    model, task = build(RunConfig(cell="rnn", hidden_size=4, seq_len=3))
    frame = ig.gate_frame(ig.draw_probes(model, task, 0)["singular"], 0)
    assert frame.empty and list(frame.columns) == ["gate", "t", "token", "step", "unit", "value"]


def test_norm_frame_is_the_l2_norm_of_cell_and_hidden_states(lstm):
    _, _, probes, direct, _ = lstm
    trace = direct["singular"][1]
    frame = ig.norm_frame(probes["singular"], 0)
    assert list(dict.fromkeys(frame["state"])) == ["cell state c_t", "hidden state h_t"]
    cell = frame[frame["state"] == "cell state c_t"].sort_values("t")["norm"].to_numpy()
    hidden = frame[frame["state"] == "hidden state h_t"].sort_values("t")["norm"].to_numpy()
    torch.testing.assert_close(torch.tensor(cell), stacked(trace.cells[0]).norm(dim=1))
    torch.testing.assert_close(torch.tensor(hidden), stacked(trace.hiddens[0]).norm(dim=1))


def test_difference_is_abs_singular_minus_plural_zero_before_the_subject(lstm):
    _, task, probes, direct, _ = lstm
    diff = ig.difference_frame(probes["singular"], probes["plural"], 0)
    s_trace, p_trace = direct["singular"][1], direct["plural"][1]
    for state, s_states, p_states in (("hidden state h_t", s_trace.hiddens[0], p_trace.hiddens[0]),
                                      ("cell state c_t", s_trace.cells[0], p_trace.cells[0])):
        rows = diff[diff["state"] == state]
        expected = (stacked(s_states) - stacked(p_states)).abs()
        torch.testing.assert_close(pivot(rows, "difference"), expected)
        torch.testing.assert_close(pivot(rows, "singular"), stacked(s_states))
        by_t = rows.groupby("t")["difference"].max()
        # t is 1-based; the subject is read at t = subject_position + 1 = 2
        assert (by_t[by_t.index <= task.subject_position] == 0.0).all()
        assert (by_t[by_t.index > task.subject_position] > 1e-6).all()
    assert diff.loc[diff["t"] == 2, "token"].iloc[0] == f"{probes['singular'].tokens[1]}/{probes['plural'].tokens[1]}"


def test_top_units_rank_by_the_last_step_difference(lstm):
    _, _, probes, direct, _ = lstm
    diff = ig.difference_frame(probes["singular"], probes["plural"], 0)
    top = ig.top_units(diff, 3)
    h_s, h_p = stacked(direct["singular"][1].hiddens[0])[-1], stacked(direct["plural"][1].hiddens[0])[-1]
    c_s, c_p = stacked(direct["singular"][1].cells[0])[-1], stacked(direct["plural"][1].cells[0])[-1]
    for state, s, p in (("hidden state h_t", h_s, h_p), ("cell state c_t", c_s, c_p)):
        rows = top[top["state"] == state]
        gap = (s - p).abs()
        assert rows["rank"].tolist() == [1, 2, 3]
        assert rows["unit"].tolist() == torch.argsort(gap, descending=True)[:3].tolist()
        torch.testing.assert_close(torch.tensor(rows["difference"].to_numpy()), gap.sort(descending=True).values[:3])
        for unit, sign in zip(rows["unit"], rows["sign"]):
            assert sign == ("singular higher" if s[unit] > p[unit] else "plural higher")
    assert len(ig.top_units(diff, 100)) == 2 * 8  # k above H gives every unit once


def test_agreement_predictions_are_the_softmax_of_the_readout(lstm):
    _, _, probes, direct, _ = lstm
    table = ig.agreement_predictions(probes).set_index("sentence")
    for name, verb in (("singular", "was"), ("plural", "were")):
        p = torch.softmax(direct[name][0][0].double(), -1)
        assert table.loc[name, "expected"] == verb
        assert table.loc[name, "P(was)"] == pytest.approx(p[0].item())
        assert table.loc[name, "P(were)"] == pytest.approx(p[1].item())
        assert table.loc[name, "predicted"] == ("were" if p[1] > p[0] else "was")
        assert table.loc[name, "correct"] == (table.loc[name, "predicted"] == verb)


def hand_probe(values: list[list[float]]) -> ig.Probe:
    """A probe whose hidden states are given: rows are time steps of one 4-unit layer."""
    hs = [torch.tensor([row]) for row in values]
    trace = Trace(outputs=torch.stack(hs, 1), hiddens=[hs], gates=[{}], cells=[[]])
    return ig.Probe("example", torch.zeros(1, len(values)), torch.zeros(1), [f"w{i}" for i in range(len(values))],
                    torch.zeros(1, 2), trace)


def test_saturation_shares_on_known_states():
    probe = hand_probe([[0.995, -0.999, 0.5, 0.0], [0.2, 0.3, -0.4, 0.98], [0.005, 0.9995, 0.011, 0.989]])
    share = lambda act: ig.saturation_frame(probe, 0, act)["share"].tolist()  # noqa: E731
    assert share("tanh") == [0.5, 0.0, 0.25]
    assert share("relu") == [0.5, 0.25, 0.0]
    assert share("sigmoid") == [0.75, 0.25, 0.5]  # below 0.01 or above 0.99 (negative values included)
    assert share("linear") == [0.0, 0.0, 0.0]
    assert ig.saturation_frame(probe, 0, "tanh")["saturated"].tolist() == [2, 0, 1]


@pytest.mark.parametrize("activation, direct", [
    ("tanh", lambda h: (h.abs() > 0.99).double().mean(1)),
    ("relu", lambda h: (h == 0).double().mean(1)),
])
def test_saturation_shares_match_direct_computation_on_a_model(activation, direct):
    config = RunConfig(cell="rnn", activation=activation, hidden_size=16, seq_len=8, init="normal", init_scale=4.0)
    model, task = build(config)
    probe = ig.draw_probes(model, task, 1)["singular"]
    with torch.no_grad():
        _, trace = model(task.pair(torch.Generator().manual_seed(1))[0])
    expected = direct(stacked(trace.hiddens[0]))
    got = torch.tensor(ig.saturation_frame(probe, 0, activation)["share"].to_numpy())
    torch.testing.assert_close(got, expected)
    assert expected.max() > 0  # a large init saturates some units, so the comparison is not all zeros


def test_units_to_show_keeps_the_number_units_when_the_heatmap_is_too_big():
    model, task = build(RunConfig(cell="lstm", hidden_size=128, seq_len=48))  # T = 50: 6400 cells per heatmap
    probes = ig.draw_probes(model, task, 0)
    units = ig.units_to_show(probes, 0)
    assert len(units) == ig.MAX_HEATMAP_CELLS // 50 == 120
    h_s = stacked(probes["singular"].trace.hiddens[0])[-1]
    h_p = stacked(probes["plural"].trace.hiddens[0])[-1]
    gap = (h_s - h_p).abs()
    assert units == sorted(torch.argsort(gap, descending=True, stable=True)[:120].tolist())
    left_out = sorted(set(range(128)) - set(units))
    assert gap[units].min() >= gap[left_out].max() and len(left_out) == 8
    small_model, small_task = build(RunConfig(cell="lstm", hidden_size=8, seq_len=5))
    assert ig.units_to_show(ig.draw_probes(small_model, small_task, 0), 0) == list(range(8))


def test_other_tasks_give_one_example_with_their_own_tokens_and_answer():
    model, task = build(RunConfig(cell="gru", hidden_size=8, seq_len=5, task="copy"))
    probes = ig.draw_probes(model, task, 0)
    inputs, targets = task.sample(1, torch.Generator().manual_seed(0))
    assert list(probes) == ["example"] and torch.equal(probes["example"].inputs, inputs)
    tokens = probes["example"].tokens
    assert tokens[:10] == [str(i) for i in inputs[0, :10].tolist()]
    assert tokens[10:14] == ["_"] * 4 and tokens[14] == "|" and len(tokens) == 25
    answer = ig.example_answer(task, probes["example"])
    assert answer.endswith(" of 10 right)") and " ".join(map(str, targets[0, -10:].tolist())) in answer
    assert list(dict.fromkeys(ig.gate_frame(probes["example"], 0)["gate"])) == ["reset", "update", "candidate"]

    model, task = build(RunConfig(cell="rnn", hidden_size=4, seq_len=4, task="adding"))
    probe = ig.draw_probes(model, task, 2)["example"]
    inputs, targets = task.sample(1, torch.Generator().manual_seed(2))
    marked = [t for t in range(4) if inputs[0, t, 1] > 0]
    assert [tok.startswith("[") for tok in probe.tokens] == [t in marked for t in range(4)]
    assert ig.example_answer(task, probe).endswith(f"true sum {targets[0, 0].item():.3f}")


def test_checkpointed_runs_and_their_labels(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    config = RunConfig(cell="gru", hidden_size=8, seq_len=5)
    with_weights = store.create_run(config.to_dict())
    store.create_run(config.to_dict())  # no checkpoint: not listed
    newest_with_weights = store.create_run(RunConfig(cell="lstm").to_dict())
    store.save_checkpoint(with_weights, 3, b"weights")
    store.save_checkpoint(newest_with_weights, 1, b"weights")
    runs = ig.checkpointed_runs(store)
    assert [run.id for run in runs] == [newest_with_weights, with_weights]
    assert ig.run_label(runs[1]) == f"#{with_weights} · running · {config.summary()}"


@pytest.mark.parametrize("requested, index, warns", [
    (None, 0, False), ("", 0, False), ("2", 1, False), ("#1", 2, False), ("7", 0, True), ("abc", 0, True),
    ("²", 0, True), ("9" * 10_000, 0, True)])
def test_default_run_index(tmp_path, requested, index, warns):
    store = Store(tmp_path / "runs.sqlite")
    for _ in range(3):
        store.create_run(RunConfig().to_dict())
    runs = store.list_runs()  # ids 3, 2, 1
    got, note = ig.default_run_index(runs, requested)
    assert got == index and (note is not None) == warns
    if warns:  # it names what the link asked for (cut short when long) and what it shows instead
        assert (requested if requested == "7" else repr(requested)[:20]) in note and "#3" in note
        assert len(note) < 250


def titles(spec: dict) -> None:
    """Every chart has a title, titled x and y axes and a titled colour legend."""
    assert spec["title"]["text"]
    encoding = spec["encoding"]
    assert encoding["x"]["title"] and encoding["y"]["title"]
    assert encoding["color"]["legend"]["title"]


def test_every_chart_has_titles_axis_titles_and_a_legend(lstm):
    _, _, probes, _, _ = lstm
    probe = probes["singular"]
    gates = ig.gate_frame(probe, 0)
    diff = ig.difference_frame(probes["singular"], probes["plural"], 0)
    top = ig.top_units(diff, 3)
    charts = [ig.gate_heatmap(gates, g) for g in ("input", "forget", "candidate", "output")]
    charts += [ig.norm_chart(ig.norm_frame(probe, 0))]
    charts += [ig.difference_heatmap(diff, s) for s in ("hidden state h_t", "cell state c_t")]
    charts += [ig.top_units_chart(top, s) for s in ("hidden state h_t", "cell state c_t")]
    charts += [ig.hidden_heatmap(ig.state_frame(probe, 0), a) for a in ("tanh", "sigmoid", "relu", "linear")]
    charts += [ig.saturation_chart(ig.saturation_frame(probe, 0, a), a) for a in ("tanh", "sigmoid", "relu", "linear")]
    specs = [c.to_dict() for c in charts]
    for spec in specs:
        titles(spec)
    assert [s["title"]["text"] for s in specs[:4]] == ["input gate", "forget gate", "candidate gate", "output gate"]
    assert specs[0]["encoding"]["color"]["scale"]["domain"] == [0.0, 1.0]
    assert specs[2]["encoding"]["color"]["scale"]["domain"] == [-1.0, 1.0]  # the tanh candidate
    assert specs[5]["title"]["text"] == "Singular vs plural: |h_t(sing) − h_t(plur)|"
    assert specs[6]["title"]["text"] == "Singular vs plural: |c_t(sing) − c_t(plur)|"
    assert specs[0]["encoding"]["x"]["sort"] == [f"{t} {tok}" for t, tok in enumerate(probe.tokens, start=1)]
    heat_rows = specs[0]["datasets"][specs[0]["data"]["name"]]
    assert len(heat_rows) == T * 8 and {r["gate"] for r in heat_rows} == {"input"}
    bar_rows = specs[7]["datasets"][specs[7]["data"]["name"]]
    assert [r["unit"] for r in bar_rows] == top[top["state"] == "hidden state h_t"]["unit"].tolist()
