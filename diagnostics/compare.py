"""The runs page's table of stored runs, and the labels that tell runs apart (charts: `compare_charts`)."""

from __future__ import annotations

import pandas as pd

from .config import ConfigError, RunConfig, applies, field_map
from .description import ModelDescription
from .store import RunInfo

MAX_COMPARED = 4
# The table lists the newest runs only: 20 000 of them took 25 s and 1.8 GB to list whole with every summary.
SHOWN_RUNS = 1000
SUMMARY_KEYS = ("final_loss", "final_metric")  # what the table shows of each run's summary
TABLE_FIELDS = ("cell", "activation", "init", "init_scale", "task", "seq_len", "optimizer", "lr", "clip",
                "clip_threshold", "weight_decay", "seed")


def runs_frame(runs: list[RunInfo]) -> pd.DataFrame:
    """One row per run with its status, where it came from (the Lab, or `watch: <name>` for a user's own model),
    key config fields and results, for filtering and picking."""
    rows = []
    for r in runs:
        summary = r.summary or {}
        fields = {f: r.config.get(f) for f in TABLE_FIELDS}
        if r.watched:  # no config: its cell is its first recurrent module's
            fields["cell"] = (r.description.get("modules") or [{}])[0].get("cell")
        source = f"watch: {r.description.get('name') or 'unnamed'}" if r.watched else "lab"
        rows.append({"id": r.id, "created": r.created[:19].replace("T", " "), "status": r.status,
                     "steps done": r.steps_done, "source": source, **fields,
                     "final loss": summary.get("final_loss"), "held-out metric": summary.get("final_metric"),
                     "pinned": r.pinned})
    columns = ["id", "created", "status", "pinned", "steps done", "source", *TABLE_FIELDS, "final loss",
               "held-out metric"]
    return pd.DataFrame(rows, columns=columns)


def filter_runs(table: pd.DataFrame, cells=(), tasks=(), statuses=()) -> pd.DataFrame:
    """Keep the rows matching every non-empty filter."""
    keep = pd.Series(True, index=table.index)
    for column, allowed in (("cell", cells), ("task", tasks), ("status", statuses)):
        if allowed:
            keep &= table[column].isin(list(allowed))
    return table[keep]


def config_differences(runs: list[RunInfo]) -> pd.DataFrame:
    """The config fields whose values differ between the lab runs (rows: field, columns: run labels); a watched
    run has no config to set beside theirs."""
    configs = {run_label(r): r.config for r in runs if not r.watched}
    differing = [f for f in field_map() if len({str(c.get(f)) for c in configs.values()}) > 1]
    return pd.DataFrame({label: [c.get(f) for f in differing] for label, c in configs.items()},
                        index=pd.Index(differing, name="field"))


# What RunConfig.summary() names; a picker's label adds the other fields where they are not at their default.
SUMMARY_FIELDS = ("cell", "activation", "hidden_size", "num_layers", "init", "init_scale", "task", "seq_len",
                  "optimizer", "lr", "clip", "clip_threshold", "seed")


def run_label(run: RunInfo) -> str:
    """"#3 lstm H32x1 … seed 0 · forget_bias 0": the summary, and every other field that applies and is not
    at its default, so runs that differ only there (weight decay, forget bias) are told apart in a picker; a
    watched run by its name and modules."""
    try:
        if run.watched:
            return f"#{run.id} {ModelDescription.from_dict(run.description).summary()}"
        config = RunConfig.from_dict(run.config)
    except (ConfigError, TypeError):
        return f"#{run.id}"
    extra = [f"{name} {getattr(config, name):g}" if isinstance(getattr(config, name), float)
             else f"{name} {getattr(config, name)}"
             for name, f in field_map().items()
             if name not in SUMMARY_FIELDS and applies(f, config) and getattr(config, name) != f.default]
    return " · ".join([f"#{run.id} {config.summary()}", *extra])


def compare_labels(runs: list[RunInfo]) -> dict[int, str]:
    """Each compared run's legend label: its id and the fields whose values differ between the lab runs and mean
    something for it ("#3 weight_decay 0", "#4 weight_decay 0.005"), or its summary when they are all alike; a
    watched run by its name and modules."""
    lab = [r for r in runs if not r.watched]
    differing = [f for f in field_map() if len({str(r.config.get(f)) for r in lab}) > 1]

    def label(r: RunInfo) -> str:
        if r.watched or not differing:
            return run_label(r)
        return f"#{r.id} " + ", ".join(f"{f} {_shown(r.config.get(f))}" for f in differing if _applies(f, r))

    return {r.id: label(r) for r in runs}


def _applies(name: str, run: RunInfo) -> bool:
    """Whether a field means anything for the run (forget_bias not for a vanilla RNN); unreadable: show it."""
    try:
        return applies(field_map()[name], RunConfig.from_dict(run.config))
    except ConfigError:
        return True


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
