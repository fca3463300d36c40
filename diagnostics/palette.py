"""One palette for every chart: a series keeps its colour across runs and pages, and red means NaN/Inf only.

A colour follows the series' name, never its position among the series a chart happens to hold, so "layer 1" is
orange whether or not a readout or a clip line is drawn beside it. Runs compared side by side take the colours
in order (a run is not a series with a fixed meaning).
"""

from __future__ import annotations

import altair as alt

NONFINITE_RED = "#d62728"  # NaN/±Inf marks, and nothing else
# Category10 without its red, in its own order.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
BLUE, ORANGE, GREEN, PURPLE, BROWN, PINK, GREY, OLIVE, CYAN = COLOURS
LIGHT_BLUE = "#9ecae1"  # the noisy line behind its smoothed one
LAYER_COLOURS = (BLUE, ORANGE, GREEN, PURPLE)  # layer 0 … 3 (num_layers is at most 4)
# Matched by prefix.
NAMED = {"readout": BROWN, "global, pre-clip": GREY, "global, post-clip": CYAN,
         "hidden units": BLUE, "input gate": ORANGE, "forget gate": GREEN, "output gate": PURPLE,
         "update gate": PINK, "reset gate": OLIVE,
         "training, ": BLUE, "training batch": LIGHT_BLUE, "held-out batch": GREEN}


def colour(series: str) -> str:
    """The colour of a series by name: "layer k" by its layer, the known names by the table, a gate by its gate
    ("forget gate (< 0.1)" is the forget gate's green); anything else, e.g. a lone loss line, is blue."""
    if series.startswith("layer ") and series[6:].isdigit():
        return LAYER_COLOURS[int(series[6:]) % len(LAYER_COLOURS)]
    for name, value in NAMED.items():
        if series.startswith(name):
            return value
    return BLUE


def series_scale(names) -> alt.Scale:
    """A colour scale over the series present, each in its own colour."""
    domain = list(dict.fromkeys(str(n) for n in names))
    return alt.Scale(domain=domain, range=[colour(n) for n in domain])


def ordered_scale(names) -> alt.Scale:
    """Colours in palette order, for things without a fixed meaning such as compared runs."""
    domain = list(dict.fromkeys(str(n) for n in names))
    return alt.Scale(domain=domain, range=[COLOURS[i % len(COLOURS)] for i in range(len(domain))])
