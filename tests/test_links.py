"""Reading a Lab link: config, lesson and variant, stored run, autorun; every bad part named, nothing raised."""

from urllib.parse import parse_qsl

import pytest

from diagnostics.config import RunConfig
from diagnostics.lessons import LESSONS
from diagnostics.links import parse_link, share_query

STORED = {7: RunConfig(cell="lstm", seq_len=20, seed=4).to_dict()}


def stored_config(run_id: int) -> dict:
    if run_id not in STORED:
        raise LookupError(f"no run {run_id} is stored")
    return STORED[run_id]


def read(query: str):
    return parse_link(dict(parse_qsl(query, keep_blank_values=True)), stored_config)


CASES = [(i, k) for i, item in enumerate(LESSONS) for k in range(len(item.variants))]


@pytest.mark.parametrize("lesson_index,variant", CASES, ids=[f"{LESSONS[i].slug}-{k}" for i, k in CASES])
def test_every_lesson_link_opens_its_variant_and_runs_it(lesson_index, variant):
    item = LESSONS[lesson_index]
    link = read(share_query(item, variant))
    assert (link.lesson, link.variant, link.run_id, link.autorun, link.problems) == (item, variant, None, True, ())
    assert link.config == item.variants[variant].config
    assert read("&".join(f"{k}={v}" for k, v in link.query(link.config).items())) == link.__class__(
        link.config, item, variant, None, False, ())  # the synced URL reopens it (without autorun)


def test_a_bad_field_falls_back_to_the_lesson_or_the_stored_run():
    link = read("lesson=4&seq_len=0")
    assert link.config == LESSONS[3].variants[0].config and link.lesson is LESSONS[3]
    assert link.problems[0].endswith("; the Lab shows the lesson's settings instead")
    link = read("run=7&optimizer=rmsprop")
    assert link.config == RunConfig.from_dict(STORED[7]) and link.run_id == 7
    assert link.problems[0].endswith("; the Lab shows the stored run's settings instead")


def test_fields_override_the_lesson_and_the_stored_run():
    assert read("lesson=3&seed=9").config == LESSONS[2].variants[0].config.replace(seed=9)
    link = read("run=7&lr=0.5")
    assert link.run_id == 7 and link.config == RunConfig.from_dict(STORED[7]).replace(lr=0.5)
    assert link.query(link.config)["run"] == "7" and not link.autorun  # a stored run is shown, not retrained


@pytest.mark.parametrize("query,problem,config", [
    ("cell=gpt&seed=2&autorun=1", "the link's settings could not be used (cell='gpt' is not valid", RunConfig()),
    ("lesson=0&autorun=1", "unknown lesson '0'; allowed: 1 (exploding-nan)", RunConfig()),
    ("lesson=7&variant=x&autorun=1", "lesson 7 has no variant 'x'; allowed: 0 (sigmoid), 1 (tanh), 2 (ReLU)",
     RunConfig()),
    ("run=abc", "run 'abc' is not a run id: run ids are whole numbers from 1 to 9223372036854775807", RunConfig()),
    ("run=8&cell=gru", "run 8 cannot be opened: no run 8 is stored", RunConfig(cell="gru")),
    ("run=99999999999999999999", "run '99999999999999999999' is not a run id", RunConfig()),  # past SQLite's int64
    ("run=%C2%B2".replace("%C2%B2", "²"), "run '²' is not a run id", RunConfig()),  # a digit to str.isdigit()
    ("run=" + "9" * 10_000, "run '" + "9" * 58 + "… is not a run id", RunConfig()),  # quoted, 60 characters
    ("run=0", "run '0' is not a run id", RunConfig()),
    ("lesson=" + "x" * 500, "unknown lesson '" + "x" * 58 + "…; allowed: 1", RunConfig()),
    ("cell=" + "y" * 500, "the link's settings could not be used (cell='" + "y" * 58 + "… is not valid", RunConfig()),
], ids=["bad-field", "bad-lesson", "bad-variant", "run-not-a-number", "run-not-stored", "run-past-int64",
        "run-superscript-two", "run-10000-digits", "run-zero", "long-lesson", "long-field-value"])
def test_a_bad_part_is_named_and_nothing_starts(query, problem, config):
    link = read(query)
    assert len(link.problems) == 1 and link.problems[0].startswith(problem), link.problems
    assert link.config == config and not link.autorun and link.lesson is None and link.run_id is None


def test_a_link_too_big_to_train_keeps_its_settings_but_does_not_start():
    link = read("cell=lstm&hidden_size=512&batch_size=1024&seq_len=1000&autorun=1")
    assert link.config == RunConfig(cell="lstm", hidden_size=512, batch_size=1024, seq_len=1000)
    assert not link.autorun and len(link.problems) == 1
    assert link.problems[0].startswith("the link's settings are shown, but this run is too big for one training step")
    assert link.problems[0].endswith("batch_size 64 fits)")
    assert read("cell=lstm&hidden_size=512&batch_size=64&seq_len=1000&autorun=1").autorun
    assert not read("cell=lstm&hidden_size=512&batch_size=65&seq_len=1000&autorun=1").autorun
