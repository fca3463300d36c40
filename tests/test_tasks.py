"""The synthetic tasks produce what they claim, and their baselines are what a memoryless model scores."""

import math

import pytest
import torch

from diagnostics.tasks import NOUNS, TASKS, AddingTask, AgreementTask, CopyTask, make_task


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SINGULAR = {s for s, _ in NOUNS}
PLURAL = {p for _, p in NOUNS}

CASES = [(name, seq_len) for name in TASKS for seq_len in (2, 7, 50)]


@pytest.mark.parametrize("name,seq_len", CASES, ids=[f"{n}-T{s}" for n, s in CASES])
def test_shapes_and_dtypes(name, seq_len):
    task = make_task(name, seq_len)
    t = {"agreement": seq_len + 2, "adding": seq_len, "copy": seq_len + 20}[name]
    assert task.total_steps() == t
    x, y = task.sample(5, gen())
    if task.input_kind == "tokens":
        assert x.shape == (5, t) and x.dtype == torch.int64
        assert 0 <= x.min() and x.max() < task.input_size
    else:
        assert x.shape == (5, t, task.input_size) and x.dtype == torch.float32
    out_shape = (5, task.output_size) if task.last_step_only else (5, t, task.output_size)
    outputs = torch.randn(out_shape)
    assert task.loss(outputs, y).shape == ()
    assert task.metric(outputs, y).shape == ()


@pytest.mark.parametrize("name", list(TASKS))
def test_same_seed_same_batch_other_seed_other_batch(name):
    task = make_task(name, 20)
    x1, y1 = task.sample(8, gen(1))
    x2, y2 = task.sample(8, gen(1))
    x3, _ = task.sample(8, gen(2))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)


# --- agreement -------------------------------------------------------------------------------------


def words(task, row):
    return [task.vocab[i] for i in row.tolist()]


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0], ids=lambda r: f"attractors{r}")
def test_agreement_target_is_number_of_first_noun(rate):
    task = make_task("agreement", 12, attractor_rate=rate)
    x, y = task.sample(200, gen(3))
    for row, target in zip(x, y):
        w = words(task, row)
        assert w[0] == "the"
        assert w[1] in SINGULAR | PLURAL
        assert target.item() == (1 if w[1] in PLURAL else 0)


def test_agreement_labels_are_balanced():
    _, y = make_task("agreement", 5).sample(4000, gen(4))
    assert abs(y.float().mean().item() - 0.5) < 0.03


def test_agreement_without_attractors_has_no_noun_in_filler():
    task = make_task("agreement", 30)
    x, _ = task.sample(500, gen(5))
    for row in x:
        assert not set(words(task, row)[2:]) & (SINGULAR | PLURAL)


def test_agreement_all_attractors_are_of_opposite_number():
    task = make_task("agreement", 30, attractor_rate=1.0)
    x, y = task.sample(500, gen(6))
    for row, target in zip(x, y):
        opposite = SINGULAR if target.item() == 1 else PLURAL
        assert all(w in opposite for w in words(task, row)[2:])


def test_agreement_attractor_rate_sets_share_of_nouns():
    task = make_task("agreement", 40, attractor_rate=0.25)
    x, _ = task.sample(500, gen(7))
    nouns = sum(w in SINGULAR | PLURAL for row in x for w in words(task, row)[2:])
    assert abs(nouns / (500 * 40) - 0.25) < 0.02


def test_agreement_chance_baseline():
    task = make_task("agreement", 10)
    _, y = task.sample(4000, gen(8))
    uniform = torch.zeros(4000, 2)
    assert task.loss(uniform, y).item() == pytest.approx(math.log(2), abs=1e-6)
    assert task.baseline_loss == pytest.approx(math.log(2))
    always_was = torch.tensor([[1.0, 0.0]]).repeat(4000, 1)
    assert abs(task.metric(always_was, y).item() - task.baseline) < 0.03


def test_agreement_loss_and_metric_match_manual():
    task = make_task("agreement", 10)
    _, y = task.sample(64, gen(9))
    logits = torch.randn(64, 2, generator=gen(10))
    manual = -torch.log_softmax(logits, -1)[torch.arange(64), y].mean()
    assert task.loss(logits, y).item() == pytest.approx(manual.item(), rel=1e-6)
    assert task.metric(logits, y).item() == pytest.approx((logits.argmax(1) == y).float().mean().item())
    perfect = torch.nn.functional.one_hot(y, 2).float()
    assert task.metric(perfect, y).item() == 1.0


def test_agreement_decode_names_subject_and_verb():
    task = make_task("agreement", 6)
    x, y = task.sample(50, gen(11))
    for row, target in zip(x, y):
        text = task.decode(row)
        subject = words(task, row)[1]
        assert text.startswith(f"the {subject} ")
        assert text.endswith("→ were" if target.item() == 1 else "→ was")


def test_agreement_decode_of_cat_sentence():
    task = make_task("agreement", 2)
    row = torch.tensor([task.vocab.index(w) for w in ["the", "cats", "had", ","]])
    assert task.decode(row) == "the cats had , → were"


def test_agreement_pair_differs_only_in_subject_number():
    task = make_task("agreement", 15, attractor_rate=0.5)
    singular, plural = task.pair(gen(12))
    assert singular.shape == plural.shape == (1, 17)
    differ = (singular != plural).nonzero()[:, 1].tolist()
    assert differ == [1]
    s, p = words(task, singular[0])[1], words(task, plural[0])[1]
    assert (s, p) in NOUNS


def test_agreement_distance():
    assert make_task("agreement", 9).agreement_distance == 10


# --- adding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq_len", [2, 3, 50], ids=lambda s: f"T{s}")
def test_adding_one_marker_per_half_and_target_is_their_sum(seq_len):
    x, y = make_task("adding", seq_len).sample(300, gen(13))
    half = seq_len // 2
    values, markers = x[..., 0], x[..., 1]
    assert set(markers.unique().tolist()) <= {0.0, 1.0}
    assert (markers[:, :half].sum(1) == 1).all() and (markers[:, half:].sum(1) == 1).all()
    assert ((0 <= values) & (values < 1)).all()
    for v, m, target in zip(values, markers, y):
        i, j = [k for k in range(seq_len) if m[k] == 1]
        assert target.item() == pytest.approx(v[i].item() + v[j].item(), abs=1e-6)


def test_adding_constant_one_scores_one_sixth():
    # The sum of two U(0,1) has mean 1 and variance 2 * 1/12 = 1/6, so predicting 1.0 costs MSE 1/6.
    task = make_task("adding", 20)
    _, y = task.sample(20000, gen(14))
    ones = torch.ones_like(y)
    assert abs(task.metric(ones, y).item() - 1 / 6) < 0.01
    assert abs(task.loss(ones, y).item() - task.baseline_loss) < 0.01
    assert task.baseline == pytest.approx(1 / 6) and not task.higher_is_better
    assert task.metric(y, y).item() == 0.0


def test_adding_decode_shows_the_sum():
    task = make_task("adding", 10)
    x, y = task.sample(1, gen(15))
    assert task.decode(x[0]).count("(t=") == 2
    assert f"= {y.item():.3f}" in task.decode(x[0])


# --- copy ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq_len", [1, 10, 100], ids=lambda s: f"T{s}")
def test_copy_structure_and_targets(seq_len):
    x, y = make_task("copy", seq_len).sample(100, gen(16))
    t = seq_len + 20
    symbols = x[:, :10]
    assert ((1 <= symbols) & (symbols <= 8)).all()
    assert (x[:, 10 : seq_len + 9] == 0).all()  # seq_len - 1 blanks
    assert (x[:, seq_len + 9] == 9).all()  # delimiter
    assert (x[:, seq_len + 10 :] == 0).all() and x.shape[1] - (seq_len + 10) == 10
    assert (x == 9).sum(1).eq(1).all()
    assert (y[:, : seq_len + 10] == 0).all()
    assert torch.equal(y[:, t - 10 :], symbols)


def memoryless_logits(batch, seq_len):
    logits = torch.zeros(batch, seq_len + 20, 9)
    logits[:, : seq_len + 10, 0] = 100.0  # certain of blank while nothing is asked
    logits[:, seq_len + 10 :, 0] = -100.0  # uniform over the 8 symbols when recall is due
    return logits


@pytest.mark.parametrize("seq_len", [10, 100], ids=lambda s: f"T{s}")
def test_copy_memoryless_baseline(seq_len):
    task = make_task("copy", seq_len)
    _, y = task.sample(4000, gen(17))
    logits = memoryless_logits(4000, seq_len)
    expected = 10 * math.log(8) / (seq_len + 20)
    assert abs(task.loss(logits, y).item() - expected) < 1e-3
    assert task.baseline_loss == pytest.approx(expected)
    assert abs(task.metric(logits, y).item() - 1 / 8) < 0.01
    assert task.baseline == pytest.approx(1 / 8)


def test_copy_metric_scores_recall_steps_only():
    task = make_task("copy", 10)
    _, y = task.sample(32, gen(18))
    perfect = torch.nn.functional.one_hot(y, 9).float() * 50
    assert task.metric(perfect, y).item() == 1.0
    assert task.loss(perfect, y).item() < 1e-6
    wrong_blanks = perfect.clone()
    wrong_blanks[:, :20] = perfect[:, :20].roll(1, dims=-1)  # every non-recall step now wrong
    assert task.metric(wrong_blanks, y).item() == 1.0


def test_copy_decode():
    task = make_task("copy", 5)
    row = torch.tensor([3, 1, 4, 1, 5, 2, 6, 5, 3, 5] + [0] * 4 + [9] + [0] * 10)
    assert task.decode(row) == "3 1 4 1 5 2 6 5 3 5 _×4 | _×10 → 3 1 4 1 5 2 6 5 3 5"


# --- validation ------------------------------------------------------------------------------------


def test_registry_and_classes():
    assert TASKS == {"agreement": AgreementTask, "adding": AddingTask, "copy": CopyTask}
    for name in TASKS:
        assert make_task(name, 4).name == name


def test_unknown_task_lists_allowed_names():
    with pytest.raises(ValueError, match="allowed: agreement, adding, copy"):
        make_task("parity", 10)


BAD = [
    ("agreement", 0, {}, r"seq_len.*>= 1.*0"),
    ("copy", -3, {}, r"seq_len.*>= 1.*-3"),
    ("adding", 1, {}, r"seq_len.*>= 2.*1"),
    ("adding", 2.5, {}, r"seq_len.*integer.*2\.5"),
    ("agreement", 5, {"attractor_rate": 1.5}, r"attractor_rate.*\[0, 1\].*1\.5"),
    ("agreement", 5, {"attractor_rate": float("nan")}, r"attractor_rate.*nan"),
    ("copy", 5, {"attractor_rate": 0.1}, r"attractor_rate.*allowed: none"),
]


@pytest.mark.parametrize(
    "name,seq_len,options,message", BAD, ids=[f"{n}-{s}-{'-'.join(o) or 'plain'}" for n, s, o, _ in BAD]
)
def test_bad_arguments_raise_value_error(name, seq_len, options, message):
    with pytest.raises(ValueError, match=message):
        make_task(name, seq_len, **options)
