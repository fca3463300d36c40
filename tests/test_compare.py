"""The Runs page's comparison chart: what a scale cannot show is counted, not dropped silently."""

import math

import pandas as pd
import pytest

from diagnostics import rundata as rd
from diagnostics.compare import compare_chart

ROWS = pd.DataFrame({"run": ["1 rnn"] * 5 + ["2 lstm"] * 5, "step": list(range(1, 6)) * 2,
                     "value": [0.7, 0.0, math.nan, math.inf, 0.5, 0.69, 0.4, 0.2, -math.inf, 0.1]})


@pytest.mark.parametrize("quantity,hidden,note", [
    (rd.LOSS, 4, "4 values not drawn: 0, NaN or ±Inf, which a log scale cannot show"),
    (rd.METRIC, 3, "3 values not drawn: NaN or ±Inf"),
], ids=["log-scale", "linear-scale"])
def test_values_a_scale_cannot_show_are_counted(quantity, hidden, note):
    spec = compare_chart(ROWS, quantity).to_dict()
    assert spec["title"]["subtitle"] == [note]
    [drawn] = spec["datasets"].values()
    assert len(drawn) == len(ROWS) - hidden
    assert all(math.isfinite(row["value"]) for row in drawn)


def test_nothing_to_hide_means_no_subtitle():
    spec = compare_chart(ROWS[ROWS["value"].between(0.01, 1)], rd.LOSS).to_dict()
    assert "subtitle" not in spec["title"] or not spec["title"]["subtitle"]
