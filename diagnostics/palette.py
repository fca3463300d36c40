"""One palette for every chart: a series keeps its colour across runs and pages, and red means NaN/Inf only.

A colour follows the series' name, never its position among the series a chart happens to hold, so "layer 1" is
orange whether or not a readout or a clip line is drawn beside it. Runs compared side by side take the colours
in order (a run is not a series with a fixed meaning).
"""

from __future__ import annotations

import re

import altair as alt

NONFINITE_RED = "#d62728"  # NaN/±Inf marks, and nothing else
# Category10 without its red, in its own order.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
BLUE, ORANGE, GREEN, PURPLE, BROWN, PINK, GREY, OLIVE, CYAN = COLOURS
LIGHT_BLUE = "#9ecae1"  # the noisy line behind its smoothed one
LAYER_COLOURS = (BLUE, ORANGE, GREEN, PURPLE)  # layer 0 … 3 (num_layers is at most 4)
REVERSE_COLOURS = (CYAN, PINK, OLIVE, BROWN)  # a watched bidirectional module's reverse layers 0 … 3
# A lane: "layer 1", or in a watched model "encoder.lstm layer 1 reverse".
_LANE = re.compile(r"^(?:.+ )?layer (?P<layer>\d+)(?P<reverse> reverse)?$")
# Matched by prefix.
NAMED = {"readout": BROWN, "global, pre-clip": GREY, "global, post-clip": CYAN,
         "hidden units": BLUE, "input gate": ORANGE, "forget gate": GREEN, "output gate": PURPLE,
         "update gate": PINK, "reset gate": OLIVE,
         "training, ": BLUE, "training batch": LIGHT_BLUE, "held-out batch": GREEN}


def colour(series: str) -> str:
    """The colour of a series by name: a lane ("layer k", "lstm layer k reverse") by its layer and direction, the
    known names by the table, a gate by its gate ("forget gate (< 0.1)" is the forget gate's green); anything
    else, e.g. a lone loss line, is blue."""
    if lane := _LANE.match(series):
        colours = REVERSE_COLOURS if lane["reverse"] else LAYER_COLOURS
        return colours[int(lane["layer"]) % len(colours)]
    for name, value in NAMED.items():
        if series.startswith(name):
            return value
    return BLUE


def series_scale(names) -> alt.Scale:
    """A colour scale over the series present, each in its own colour: a name whose colour another series of the
    chart has already (a watched model's `enc layer 0` beside `dec layer 0`) takes the first free one."""
    domain = list(dict.fromkeys(str(n) for n in names))
    used: list[str] = []
    for name in domain:
        wanted = colour(name)
        free = [c for c in COLOURS if c not in used]
        used.append(wanted if wanted not in used or not free else free[0])
    return alt.Scale(domain=domain, range=used)


def ordered_scale(names) -> alt.Scale:
    """Colours in palette order, for things without a fixed meaning such as compared runs."""
    domain = list(dict.fromkeys(str(n) for n in names))
    return alt.Scale(domain=domain, range=[COLOURS[i % len(COLOURS)] for i in range(len(domain))])
