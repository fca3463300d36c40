"""`watch` inside a user's own loop: it never changes what the model computes, its ‖∂L/∂h_t‖ equals an
independent computation with PyTorch's own cells, NaN/Inf is located by step, module, parameter, layer and
direction, hooks are gone after the block (also after an exception), and what it cannot record is refused."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from diagnostics import Watch, WatchError, watch
from diagnostics import rundata as rd
from diagnostics.description import ModelDescription
from diagnostics.store import Store

VOCAB, EMB, H, T, B = 11, 6, 8, 10, 5


class Tagger(nn.Module):
    """A practitioner's kind of model: embedding, a recurrent module, a linear head on the last position."""

    def __init__(self, kind=nn.LSTM, **kw):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMB)
        self.encoder = nn.Module()
        self.encoder.rnn = kind(EMB, H, batch_first=True, **kw)
        directions = 2 if kw.get("bidirectional") else 1
        self.head = nn.Linear(H * directions, VOCAB)

    def forward(self, x):
        out, _ = self.encoder.rnn(self.embed(x))
        return self.head(out[:, -1])


def train(model, steps, w=None, lr=0.05, poison=None):
    """Adam on a copy-the-first-token task; `poison(step, model)` may break the model before a step."""
    g = torch.Generator().manual_seed(3)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(1, steps + 1):
        if poison is not None:
            poison(step, model)
        x = torch.randint(0, VOCAB, (B, T), generator=g)
        loss = nn.functional.cross_entropy(model(x), x[:, 0])
        optimizer.zero_grad()
        loss.backward()
        if w is not None:
            w.step(loss)
        optimizer.step()
        losses.append(loss.item())
    return losses


def fresh(kind=nn.LSTM, **kw):
    torch.manual_seed(0)
    return Tagger(kind, **kw)


MODELS = {"lstm-2-layers-bidirectional-dropout": (nn.LSTM, {"num_layers": 2, "bidirectional": True,
                                                            "dropout": 0.3}),
          "gru": (nn.GRU, {}), "rnn-relu-2-layers": (nn.RNN, {"num_layers": 2, "nonlinearity": "relu"})}


@pytest.mark.parametrize("kind,kw", MODELS.values(), ids=MODELS.keys())
@pytest.mark.parametrize("every", [1, 10])
def test_watch_never_changes_what_the_model_computes(kind, kw, every):
    model = fresh(kind, **kw)
    torch.manual_seed(42)  # dropout draws from the global generator: the same seed, the same masks
    plain = train(model, 50)
    model = fresh(kind, **kw)
    torch.manual_seed(42)
    with watch(model, every=every) as w:
        watched = train(model, 50, w)
    assert max(abs(a - b) for a, b in zip(plain, watched)) < 1e-5
    data = w.data()
    recorded = sorted(set(data.time_grads["step"]))
    assert recorded == ([1, 10, 20, 30, 40, 50] if every == 10 else list(range(1, 51)))
    assert sorted(set(data.series(rd.LOSS).index)) == list(range(1, 51))
    torch.testing.assert_close(torch.tensor(data.series(rd.LOSS).to_list()), torch.tensor(watched))


def oracle_profiles(model: Tagger, x):
    """‖∂L/∂h_t‖ per lane and processing step with PyTorch's own nn.LSTMCell, one step at a time: nothing of the
    twin is used. The loss is the Tagger's, on the same weights."""
    rnn = model.encoder.rnn
    directions = 2 if rnn.bidirectional else 1
    layer_in = model.embed(x).transpose(0, 1)  # (T, B, EMB)
    states, lanes_h = [], []
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            cell = nn.LSTMCell(layer_in.shape[-1], H)
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, name).copy_(getattr(rnn, name + suffix))
            h = c = torch.zeros(x.shape[0], H)
            hs = []
            for t in (range(T - 1, -1, -1) if d else range(T)):
                h, c = cell(layer_in[t], (h, c))
                hs.append(h)
            lanes_h.append(hs)
            outs.append(torch.stack(hs[::-1] if d else hs))
        layer_in = torch.cat(outs, dim=2)
        states.append(layer_in)
    logits = model.head(layer_in[-1])
    loss = nn.functional.cross_entropy(logits, x[:, 0])
    flat = [h for hs in lanes_h for h in hs]
    grads = torch.autograd.grad(loss, flat)
    it = iter(grads)
    return loss, [[float(next(it).norm()) for _ in hs] for hs in lanes_h]


def test_time_gradients_equal_an_independent_autograd_computation():
    model = fresh(nn.LSTM, num_layers=2, bidirectional=True)
    x = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(9))
    loss_oracle, want = oracle_profiles(model, x)
    with watch(model, every=1) as w:
        loss = nn.functional.cross_entropy(model(x), x[:, 0])
        loss.backward()
        w.step(loss)
    assert loss.item() == pytest.approx(loss_oracle.item(), abs=1e-6)
    tg = w.data().time_grads
    assert sorted(set(tg["layer"])) == [0, 1, 2, 3]  # lanes: layer 0 fwd, layer 0 reverse, layer 1 fwd, reverse
    for lane, profile in enumerate(want):
        got = tg[tg["layer"] == lane].sort_values("t")["value"].to_list()
        assert got == pytest.approx(profile, rel=1e-5, abs=1e-9)
    # the head reads the last position, which the top layer's reverse lane reads first: its gradient sits at its
    # first processing step alone (nothing later in its order reaches the loss), the forward lane's at t = T
    assert want[3][0] > 0 and want[3][1:] == [0.0] * (T - 1) and want[2][-1] > want[2][0] > 0


def test_packed_sequences_of_different_lengths_are_profiled_by_each_rows_own_steps():
    """Each row's gradient alone (its sequence unpadded, batch of one) summed over rows gives the batch profile:
    rows count only on the steps they took, in each direction's own order."""
    torch.manual_seed(0)
    rnn = nn.GRU(EMB, H, bidirectional=True)
    lengths = [10, 4, 7]
    x = torch.randn(T, len(lengths), EMB, generator=torch.Generator().manual_seed(2))

    class Packed(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x, lengths):
            _, h_n = self.rnn(pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False))
            return (h_n ** 2).sum()

    model = Packed()
    with watch(model, every=1) as w:
        loss = model(x, lengths)
        loss.backward()
        w.step(loss)
    tg = w.data().time_grads
    squares = torch.zeros(2, T)
    for b, n in enumerate(lengths):
        hs = {0: [], 1: []}
        out_states = []
        for d in (0, 1):
            cell = nn.GRUCell(EMB, H)
            suffix = "_l0" + ("_reverse" if d else "")
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, name).copy_(getattr(rnn, name + suffix))
            h = torch.zeros(1, H)
            for t in (range(n - 1, -1, -1) if d else range(n)):
                h = cell(x[t, b:b + 1], h)
                hs[d].append(h)
            out_states.append(h)
        row_loss = sum((s ** 2).sum() for s in out_states)
        grads = torch.autograd.grad(row_loss, hs[0] + hs[1])
        for d in (0, 1):
            for p in range(n):
                squares[d, p] += float(grads[d * n + p].pow(2).sum())
    for lane in (0, 1):
        got = tg[tg["layer"] == lane].sort_values("t")["value"].to_list()
        assert got == pytest.approx(squares[lane].sqrt().tolist(), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("poisoned,every,time_step", [(7, 5, None), (7, 7, 1)], ids=["unrecorded", "recorded"])
def test_a_weight_set_to_nan_is_located_to_its_step_module_parameter_layer_and_direction(poisoned, every, time_step):
    """On a recorded step the first non-finite hidden state of the weight's lane gives the time step too (its
    first: W_hh·h0 is NaN·0)."""
    def poison(step, model):
        if step == poisoned:
            with torch.no_grad():
                model.encoder.rnn.weight_hh_l1_reverse[0, 0] = math.nan

    model = fresh(nn.LSTM, num_layers=2, bidirectional=True)
    with watch(model, every=every) as w:
        train(model, 12, w, poison=poison)
    first = w.summary.first_nonfinite
    assert first == {"step": 7, "tensor": "encoder.rnn.weight_hh_l1_reverse", "layer": 1, "time_step": time_step,
                     "module": "encoder.rnn", "parameter": "weight_hh_l1_reverse", "direction": "reverse",
                     "lane": 3}
    events = w.data().events
    assert events["step"].min() == 7
    at_7 = events[events["step"] == 7]
    assert at_7["tensor"].iloc[0] == "encoder.rnn.weight_hh_l1_reverse"
    assert tuple(at_7[["nan", "posinf", "neginf"]].iloc[0]) == (1, 0, 0)


def test_hooks_are_removed_on_exit_also_after_an_exception(tmp_path):
    model = fresh(nn.GRU, num_layers=2)
    rnn = model.encoder.rnn
    with pytest.raises(RuntimeError, match="the user's own bug"):
        with watch(model, every=2, db=tmp_path / "runs.sqlite", name="crashes") as w:
            train(model, 3, w)
            raise RuntimeError("the user's own bug")
    assert "forward" not in rnn.__dict__
    with Store(tmp_path / "runs.sqlite", create=False) as store:
        info = store.get_run(w.run_id)
    assert (info.status, info.steps_done) == ("stopped", 3)
    # outside the block the model is PyTorch's again: the fused module runs and nothing is recorded
    before = len(w.data().metrics)
    train(model, 1)
    assert len(w.data().metrics) == before


def test_a_watched_run_in_the_store_holds_its_description_and_the_same_rows(tmp_path):
    model = fresh(nn.LSTM, bidirectional=True)
    with watch(model, every=3, db=tmp_path / "runs.sqlite", name="my-model") as w:
        train(model, 7, w)
    model = fresh(nn.LSTM, bidirectional=True)
    with watch(model, every=3) as memory:
        train(model, 7, memory)
    with Store(tmp_path / "runs.sqlite", create=False) as store:
        info = store.get_run(w.run_id)
        stored = store.load(w.run_id)
    described = ModelDescription.from_dict(info.description)
    assert (info.status, info.steps_done, info.config) == ("completed", 7, {})
    assert (described.name, described.source, [lane.name for lane in described.lanes()]) == \
        ("my-model", "watch", ["encoder.rnn layer 0", "encoder.rnn layer 0 reverse"])
    timeless = stored.metrics[stored.metrics["name"] != rd.STEP_SECONDS].reset_index(drop=True)
    want = memory.data().metrics
    want = want[want["name"] != rd.STEP_SECONDS].reset_index(drop=True)
    assert timeless[["step", "name", "layer", "tensor"]].equals(want[["step", "name", "layer", "tensor"]])
    assert timeless["value"].to_numpy() == pytest.approx(want["value"].to_numpy(), rel=1e-6, nan_ok=True)
    names = set(stored.metrics["tensor"])
    assert {"encoder.rnn.weight_hh_l0_reverse", "embed.weight", "head.bias"} <= names
    assert info.summary["steps_done"] == 7 and info.summary["status"] == "completed"


def test_what_watch_cannot_record_is_refused_with_the_reason():
    torch.manual_seed(0)
    projected = nn.Module()
    projected.lstm = nn.LSTM(4, 8, proj_size=2)
    with pytest.raises(WatchError, match=r"lstm is an nn.LSTM with proj_size=2"):
        watch(projected)
    with pytest.raises(WatchError, match="Linear holds no nn.RNN, nn.LSTM or nn.GRU"):
        watch(nn.Linear(3, 3))
    for every in (0, -1, 2.5, True):
        with pytest.raises(WatchError, match="every must be a whole number of steps ≥ 1"):
            watch(fresh(), every=every)
    w = Watch(fresh())
    with pytest.raises(WatchError, match="inside the `with watch"):
        w.step(torch.tensor(1.0))


def test_a_packed_batch_of_equal_lengths_records_what_the_plain_batch_records():
    """The packed path (rows aligned to their own steps, masked shares) and the plain one (all gates in one
    tensor) give the same numbers when every row takes every step."""
    x = torch.randn(T, B, EMB, generator=torch.Generator().manual_seed(4))
    recorded = []
    for packed in (False, True):
        torch.manual_seed(0)
        model = nn.Module()
        model.rnn = nn.LSTM(EMB, H, bidirectional=True)
        with watch(model, every=1) as w:
            inputs = pack_padded_sequence(x, torch.full((B,), T)) if packed else x
            out, (h_n, _) = model.rnn(inputs)
            loss = (out.data if packed else out).pow(2).mean() + h_n.pow(2).sum()
            loss.backward()
            w.step(loss)
        recorded.append(w.data())
    plain, packed = recorded
    for table in ("time_grads", "gates"):
        a, b = getattr(plain, table), getattr(packed, table)
        key = [c for c in a.columns if c not in ("value", "mean", "frac_low", "frac_high")]
        a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
        assert a[key].equals(b[key]) and len(a) > 0
        for column in set(a.columns) - set(key):
            assert a[column].to_numpy() == pytest.approx(b[column].to_numpy(), rel=1e-5, abs=1e-7), column
    saturation = [d.metrics[d.metrics["name"] == rd.HIDDEN_SATURATION]["value"].to_list() for d in recorded]
    assert saturation[0] == pytest.approx(saturation[1], abs=1e-7)


def test_a_frozen_module_fed_without_gradients_records_zeros_and_does_not_break_the_loop():
    model = fresh(nn.GRU)
    model.embed.requires_grad_(False)
    model.encoder.rnn.requires_grad_(False)
    with watch(model, every=1) as w:
        train(model, 2, w)
    tg = w.data().time_grads
    assert len(tg) == 2 * T and (tg["value"] == 0.0).all()  # no gradient reaches a frozen module's states


def test_one_watch_per_model_and_what_cannot_be_recorded_faithfully_is_refused():
    model = fresh(nn.LSTM)
    with watch(model):
        with pytest.raises(WatchError, match="encoder.rnn is watched already by another watch()"):
            watch(model)
    with watch(model, every=1) as w:  # free again once the first has ended
        train(model, 1, w)
    assert len(w.data().time_grads) == T
    from torch.nn.utils import parametrize

    class Doubled(nn.Module):
        def forward(self, W):
            return 2 * W

    parametrize.register_parametrization(model.encoder.rnn, "weight_hh_l0", Doubled())
    with pytest.raises(WatchError, match=r"encoder.rnn has parametrized weights \(weight_hh_l0\)"):
        watch(model)


def test_a_bare_recurrent_module_is_named_without_a_prefix_and_the_loss_is_no_parameter():
    torch.manual_seed(0)
    gru = nn.GRU(EMB, H)
    x = torch.randn(T, B, EMB, generator=torch.Generator().manual_seed(5))
    with watch(gru, every=3) as w:
        for step in range(1, 3):
            bad = x.clone()
            if step == 2:
                bad[4, 0, 0] = math.nan  # a NaN in the data, on an unrecorded step
            out, _ = gru(bad)
            loss = out.pow(2).mean()
            loss.backward()
            w.step(loss)
    metrics = w.data().metrics
    assert set(metrics[metrics["name"] == rd.SIGMA_MAX]["tensor"]) == {"weight_hh_l0"}
    assert "weight_hh_l0" in set(metrics[metrics["name"] == rd.GRAD_NORM]["tensor"])
    assert [lane.name for lane in w.description.lanes()] == ["layer 0"]
    assert w.summary.first_nonfinite == {"step": 2, "tensor": "loss", "layer": None, "time_step": None,
                                         "module": None, "parameter": None, "direction": None, "lane": None}


def test_a_wrong_initial_state_is_refused_as_the_module_refuses_it():
    gru = nn.GRU(EMB, H)
    x = torch.randn(T, B, EMB)
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 5, 8\), got \[1, 1, 8\]"):
        gru(x, torch.zeros(1, 1, H))
    with watch(gru, every=1), pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 5, 8\), got \[1, 1, 8\]"):
        gru(x, torch.zeros(1, 1, H))
