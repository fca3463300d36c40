"""Read the charts an AppTest run rendered: each Vega-Lite spec with its data as a DataFrame."""

import json

from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest


def charts(at: AppTest) -> list[dict]:
    """Each rendered chart's spec with its data as a DataFrame under "rows"."""
    specs = []
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        data = {d.name: convert_arrow_bytes_to_pandas_df(d.data.data) for d in element.proto.datasets}
        spec["rows"] = data[spec["data"]["name"]] if "data" in spec and "name" in spec["data"] else None
        spec["datasets"] = data
        specs.append(spec)
    return specs
