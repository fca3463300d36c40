"""RunConfig: validation messages, bounds, and the URL / JSON round trips a share link relies on."""

import dataclasses
import json

import pytest

from diagnostics.config import EXTRA_QUERY_KEYS, ConfigError, RunConfig, applies, field_map

ODD = RunConfig(cell="lstm", activation="relu", init="orthogonal", init_scale=2.5, forget_bias=-0.5,
                hidden_size=17, num_layers=3, task="copy", seq_len=123, attractor_rate=0.25, batch_size=7,
                steps=4321, optimizer="adam", lr=3e-4, momentum=0.5, weight_decay=1e-3, clip="value",
                clip_threshold=0.05, on_nonfinite="skip", record_every=0, seed=987654)


def test_every_field_has_help_and_group_and_a_limit():
    for f in dataclasses.fields(RunConfig):
        m = f.metadata
        assert m["help"] and m["group"]
        assert m["choices"] or (m["lo"] is not None and m["hi"] is not None), f.name


@pytest.mark.parametrize("config", [RunConfig(), ODD], ids=["defaults", "every-field-changed"])
def test_query_round_trip_keeps_every_field(config):
    query = config.to_query()
    assert "seed=" in query and "cell=" in query
    assert RunConfig.from_query(query) == config
    assert RunConfig.from_query("?" + query) == config


def test_odd_config_differs_from_defaults_in_every_field():
    assert set(RunConfig().differences(ODD)) == set(field_map())


@pytest.mark.parametrize("config", [RunConfig(), ODD], ids=["defaults", "every-field-changed"])
def test_json_round_trip(config):
    text = config.to_json()
    assert json.loads(text)["seed"] == config.seed
    assert RunConfig.from_json(text) == config


@pytest.mark.parametrize("changes,message", [
    ({"cell": "transformer"}, "cell='transformer' is not valid; allowed: one of rnn, lstm, gru"),
    ({"hidden_size": 513}, "hidden_size=513 is out of range; allowed: an integer from 1 to 512"),
    ({"num_layers": 0}, "num_layers=0 is out of range; allowed: an integer from 1 to 4"),
    ({"seq_len": 1001}, "seq_len=1001 is out of range; allowed: an integer from 2 to 1000"),
    ({"steps": 100_001}, "steps=100001 is out of range"),
    ({"batch_size": 2000}, "batch_size=2000 is out of range; allowed: an integer from 1 to 1024"),
    ({"lr": "fast"}, "lr='fast' is not valid; allowed: a number from 1e-07 to 10000"),
    ({"hidden_size": "12.5"}, "hidden_size='12.5' is not valid; allowed: an integer"),
    ({"clip_threshold": float("nan")}, "clip_threshold=nan is out of range"),
    ({"init": "zeros"}, "allowed: one of default, xavier_uniform, xavier_normal, he, orthogonal, identity, normal"),
    ({"colour": "red"}, "unknown config field(s) 'colour'; allowed: cell, activation"),
], ids=["cell", "hidden-too-big", "no-layers", "seq-too-long", "too-many-steps", "batch-too-big", "lr-text",
        "hidden-fraction", "nan-threshold", "unknown-init", "unknown-field"])
def test_bad_values_name_field_value_and_what_is_allowed(changes, message):
    with pytest.raises(ConfigError) as err:
        RunConfig().replace(**changes)
    assert message in str(err.value)


def test_bad_query_gives_clear_message():
    with pytest.raises(ConfigError, match="num_layers='many' is not valid"):
        RunConfig.from_query("cell=lstm&num_layers=many")


def test_query_strings_are_parsed_to_types_and_extra_keys_pass():
    config = RunConfig.from_query("cell=LSTM&hidden_size=32&lr=1e-2&steps=1e3&autorun=1&lesson=3")
    assert (config.cell, config.hidden_size, config.lr, config.steps) == ("lstm", 32, 0.01, 1000)
    assert {"autorun", "lesson"} <= set(EXTRA_QUERY_KEYS)


def test_partial_query_keeps_defaults_for_missing_fields():
    assert RunConfig.from_query("seed=5") == RunConfig(seed=5)


def test_direct_construction_validates_types():
    with pytest.raises(ConfigError, match="hidden_size=64.0 is not valid"):
        RunConfig(hidden_size=64.0)
    with pytest.raises(ConfigError, match="seed=True is not valid"):
        RunConfig(seed=True)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().lr = 1.0


@pytest.mark.parametrize("name,config,expected", [
    ("forget_bias", RunConfig(cell="lstm"), True),
    ("forget_bias", RunConfig(cell="gru"), True),
    ("forget_bias", RunConfig(cell="rnn"), False),
    ("activation", RunConfig(cell="rnn"), True),
    ("activation", RunConfig(cell="lstm"), False),
    ("momentum", RunConfig(optimizer="adam"), False),
    ("clip_threshold", RunConfig(clip="none"), False),
], ids=["forget-lstm", "forget-gru", "forget-rnn", "act-rnn", "act-lstm", "momentum-adam", "threshold-noclip"])
def test_applies_says_which_fields_matter(name, config, expected):
    assert applies(field_map()[name], config) is expected


def test_summary_names_the_essentials():
    assert RunConfig().summary() == "rnn-tanh H64x1 default×1 agreement T10 sgd lr 0.1 clip norm 1 seed 0"
