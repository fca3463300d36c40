"""Check each initialiser's numbers against its paper's formula, per gate block, on torch.nn.RNN/LSTM/GRU."""

import math

import pytest
import torch

from diagnostics.initialisers import INITIALISERS, gain, initialise, recurrent_matrices

MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# Written out here rather than taken from the module under test.
GAINS = {"tanh": 5 / 3, "relu": math.sqrt(2), "sigmoid": 1.0, "linear": 1.0}


def make(cell, hidden_size, input_size=64, num_layers=2, seed=0, **kw):
    """A torch module plus the same module initialised by `initialise` with a seeded generator."""
    rnn = MODULES[cell](input_size, hidden_size, num_layers=num_layers)
    initialise(rnn, cell=cell, generator=torch.Generator().manual_seed(seed), **kw)
    return rnn


def blocks(rnn, name):
    """The H-row gate blocks of one parameter, in float64 for exact statistics."""
    return getattr(rnn, name).detach().double().split(rnn.hidden_size)


def expected_variance(init, cell, activation, fan_in, H, recurrent, init_scale):
    """The variance each scheme's formula prescribes for one H × fan_in block."""
    act_gain = GAINS[activation if cell == "rnn" else "tanh"]
    if init == "normal":
        return init_scale**2 / H if recurrent else 1 / fan_in
    base = {
        "default": 1 / (3 * H),
        "xavier_uniform": 2 / (fan_in + H) * (act_gain if cell == "rnn" else 1.0) ** 2,
        "xavier_normal": 2 / (fan_in + H) * (act_gain if cell == "rnn" else 1.0) ** 2,
        "he": act_gain**2 / fan_in,
    }[init]
    return base * init_scale**2 if recurrent else base


VARIANCE_CASES = [
    ("rnn", "tanh", "default", 1.0),
    ("rnn", "tanh", "xavier_uniform", 1.0),
    ("rnn", "sigmoid", "xavier_uniform", 1.0),
    ("rnn", "relu", "xavier_normal", 1.0),
    ("rnn", "tanh", "xavier_uniform", 2.0),
    ("rnn", "relu", "he", 1.0),
    ("rnn", "tanh", "he", 1.0),
    ("rnn", "linear", "he", 0.5),
    ("rnn", "tanh", "normal", 3.0),
    ("lstm", "tanh", "default", 1.0),
    ("lstm", "tanh", "xavier_uniform", 1.0),
    ("lstm", "tanh", "xavier_normal", 1.0),
    ("lstm", "tanh", "he", 2.0),
    ("lstm", "relu", "he", 1.0),  # activation is ignored for gated cells: tanh gain
    ("lstm", "tanh", "normal", 1.5),
    ("gru", "tanh", "default", 1.0),
    ("gru", "tanh", "xavier_uniform", 1.0),
    ("gru", "tanh", "he", 1.0),
    ("gru", "tanh", "normal", 2.0),
]


@pytest.mark.parametrize(
    "cell, activation, init, init_scale",
    VARIANCE_CASES,
    ids=[f"{c}-{a}-{i}-x{s:g}" for c, a, i, s in VARIANCE_CASES],
)
def test_block_variance_matches_formula(cell, activation, init, init_scale):
    H, input_size = 256, 64
    rnn = make(cell, H, input_size, activation=activation, init=init, init_scale=init_scale)
    for k in range(2):  # layer 1's weight_ih has H columns, layer 0's input_size
        for name, recurrent in ((f"weight_ih_l{k}", False), (f"weight_hh_l{k}", True)):
            for g, block in enumerate(blocks(rnn, name)):
                fan_in = block.shape[1]
                assert fan_in == (H if recurrent or k > 0 else input_size)
                want = expected_variance(init, cell, activation, fan_in, H, recurrent, init_scale)
                # Mean of squares (the mean is 0 by design). Its relative standard error is at most
                # sqrt(2/n) ≈ 1.1 % for the smallest block (n = 256·64 entries), so 5 % is > 4 sigma
                # yet rejects every wrong fan (e.g. G·H instead of H) or gain (the closest, 1 vs 5/3).
                got = block.pow(2).mean().item()
                assert got == pytest.approx(want, rel=0.05), f"{name} block {g}"


EXACT_CASES = [(c, s, n) for c in ("rnn", "lstm", "gru") for s in (1.0, 2.5) for n in (32, 96)]


@pytest.mark.parametrize(
    "cell, init_scale, input_size", EXACT_CASES, ids=[f"{c}-x{s:g}-in{n}" for c, s, n in EXACT_CASES]
)
def test_orthogonal_singular_values_are_exactly_one(cell, init_scale, input_size):
    H = 64
    rnn = make(cell, H, input_size, activation="tanh", init="orthogonal", init_scale=init_scale)
    for k in range(2):
        for block in blocks(rnn, f"weight_hh_l{k}"):
            s = torch.linalg.svdvals(block)
            assert torch.allclose(s, torch.full_like(s, init_scale), rtol=0, atol=1e-5)
        # weight_ih blocks are semi-orthogonal (H × 32 and H × 96 both) and not scaled by init_scale.
        for block in blocks(rnn, f"weight_ih_l{k}"):
            s = torch.linalg.svdvals(block)
            assert torch.allclose(s, torch.ones_like(s), rtol=0, atol=1e-5)


@pytest.mark.parametrize("cell, init_scale", [(c, s) for c in ("rnn", "lstm", "gru") for s in (1.0, 2.5)],
                         ids=[f"{c}-x{s:g}" for c in ("rnn", "lstm", "gru") for s in (1.0, 2.5)])
def test_identity_blocks_are_scaled_identity_with_tiny_inputs(cell, init_scale):
    H = 128
    rnn = make(cell, H, activation="relu", init="identity", init_scale=init_scale)
    for k in range(2):
        for block in blocks(rnn, f"weight_hh_l{k}"):
            assert torch.equal(block, init_scale * torch.eye(H, dtype=torch.float64))
            s = torch.linalg.svdvals(block)
            assert torch.allclose(s, torch.full_like(s, init_scale), rtol=0, atol=1e-5)
        for block in blocks(rnn, f"weight_ih_l{k}"):
            # std 0.001 (Le et al. 2015); n ≥ 128·64 entries puts the estimate within ~1 % (sd of the std).
            assert block.pow(2).mean().sqrt().item() == pytest.approx(0.001, rel=0.05)


def spectral_radius(w):
    return torch.linalg.eigvals(w.detach().double()).abs().max().item()


def test_default_tanh_rnn_spectral_radius_is_one_over_sqrt3():
    # U(±1/√H) has variance 1/(3H); by the circular law the eigenvalues fill a disc of radius 1/√3.
    # At H = 128 the largest one overshoots the disc edge by ~5 % with a spread of ~3 %, hence 10 %.
    rnn = make("rnn", 128, num_layers=1, activation="tanh", init="default")
    assert isinstance(rnn, torch.nn.RNN)
    assert spectral_radius(rnn.weight_hh_l0) == pytest.approx(1 / math.sqrt(3), rel=0.10)


def test_normal_init_scale_is_the_spectral_radius():
    # N(0, 9/H) → disc of radius 3 (circular law); applying init_scale twice would give 9.
    rnn = make("rnn", 256, num_layers=1, activation="tanh", init="normal", init_scale=3.0)
    assert spectral_radius(rnn.weight_hh_l0) == pytest.approx(3.0, rel=0.15)


NON_DEFAULT = [name for name in INITIALISERS if name != "default"]
FORGET_CASES = [(i, b) for i in NON_DEFAULT for b in (0.0, 1.0, 2.5)]


@pytest.mark.parametrize(
    "init, forget_bias", FORGET_CASES, ids=[f"lstm-{i}-fb{b:g}" for i, b in FORGET_CASES]
)
def test_lstm_effective_forget_bias_is_exact(init, forget_bias):
    H = 32
    rnn = make("lstm", H, activation="tanh", init=init, forget_bias=forget_bias)
    for k in range(2):
        b_ih, b_hh = rnn.get_parameter(f"bias_ih_l{k}").detach(), rnn.get_parameter(f"bias_hh_l{k}").detach()
        assert torch.equal(b_ih[H:2 * H] + b_hh[H:2 * H], torch.full((H,), forget_bias))
        for other in (slice(0, H), slice(2 * H, 4 * H)):
            assert torch.equal(b_ih[other], torch.zeros(len(b_ih[other])))
            assert torch.equal(b_hh[other], torch.zeros(len(b_hh[other])))


def test_lstm_default_keeps_uniform_biases_except_the_forget_gate():
    H = 32
    rnn = make("lstm", H, activation="tanh", init="default", forget_bias=1.0)
    bound = 1 / math.sqrt(H)
    for k in range(2):
        b_ih, b_hh = rnn.get_parameter(f"bias_ih_l{k}").detach(), rnn.get_parameter(f"bias_hh_l{k}").detach()
        assert torch.equal(b_ih[H:2 * H] + b_hh[H:2 * H], torch.ones(H))
        rest = torch.cat([b_ih[:H], b_ih[2 * H:], b_hh[:H], b_hh[2 * H:]])
        assert rest.abs().max() <= bound
        assert rest.abs().max() > 0.9 * bound  # 192 uniform draws reach the edge; all-zero would fail


def test_forget_bias_is_ignored_by_a_vanilla_rnn():
    rnn = make("rnn", 32, activation="tanh", init="orthogonal", forget_bias=1.0)
    for name, p in rnn.named_parameters():
        if name.startswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name


def test_forget_bias_opens_only_the_gru_update_gate():
    H = 32
    rnn = make("gru", H, activation="tanh", init="orthogonal", forget_bias=2.0)
    b_ih, b_hh = rnn.get_parameter("bias_ih_l0").detach(), rnn.get_parameter("bias_hh_l0").detach()
    assert torch.equal(b_ih[H:2 * H], torch.full((H,), 2.0))  # z = σ(2) ≈ 0.88 keeps h_{t-1}
    assert torch.equal(torch.cat([b_ih[:H], b_ih[2 * H:], b_hh]), torch.zeros(5 * H))


DETERMINISM_CASES = [(c, i) for c in ("rnn", "lstm", "gru") for i in INITIALISERS]


@pytest.mark.parametrize("cell, init", DETERMINISM_CASES, ids=[f"{c}-{i}" for c, i in DETERMINISM_CASES])
def test_generator_alone_determines_every_parameter(cell, init):
    def build(torch_seed, generator_seed):
        torch.manual_seed(torch_seed)  # different construction-time values and global RNG state
        rnn = MODULES[cell](16, 24, num_layers=2)
        initialise(rnn, cell=cell, activation="tanh", init=init, init_scale=1.5, forget_bias=1.0,
                   generator=torch.Generator().manual_seed(generator_seed))
        return dict(rnn.named_parameters())

    a, b, c = build(0, 7), build(1, 7), build(0, 8)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["weight_ih_l0"], c["weight_ih_l0"])


def test_recurrent_matrices_are_each_layers_weight_hh():
    rnn = torch.nn.GRU(8, 16, num_layers=3)
    mats = recurrent_matrices(rnn)
    assert len(mats) == 3
    assert all(m is getattr(rnn, f"weight_hh_l{k}") for k, m in enumerate(mats))


def test_gain_values():
    for activation, want in GAINS.items():
        assert gain(activation) == pytest.approx(want)


def test_initialiser_names():
    assert set(INITIALISERS) == {"default", "xavier_uniform", "xavier_normal", "he", "orthogonal", "identity",
                                 "normal"}


def test_unknown_init_lists_the_allowed_names():
    with pytest.raises(ValueError, match="unknown init 'kaiming'") as excinfo:
        initialise(torch.nn.RNN(4, 8), cell="rnn", activation="tanh", init="kaiming")
    assert all(name in str(excinfo.value) for name in INITIALISERS)


@pytest.mark.parametrize(
    "rnn, kw",
    [
        (torch.nn.RNN(4, 8), {"cell": "rnn", "activation": "softplus"}),
        (torch.nn.GRU(4, 8), {"cell": "lstm", "activation": "tanh"}),
        (torch.nn.LSTM(4, 8), {"cell": "cnn", "activation": "tanh"}),
        (torch.nn.LSTM(4, 8, bidirectional=True), {"cell": "lstm", "activation": "tanh"}),
    ],
    ids=["unknown-activation", "cell-mismatch", "unknown-cell", "bidirectional"],
)
def test_bad_arguments_raise(rnn, kw):
    with pytest.raises(ValueError):
        initialise(rnn, init="he", **kw)


def test_module_without_biases_gets_its_weights_initialised():
    rnn = torch.nn.LSTM(8, 16, bias=False)
    initialise(rnn, cell="lstm", activation="tanh", init="identity", init_scale=2.0, forget_bias=1.0)
    assert [name for name, _ in rnn.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    assert all(torch.equal(b, 2.0 * torch.eye(16)) for b in rnn.weight_hh_l0.detach().split(16))
