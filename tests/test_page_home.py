"""Home page through Streamlit's AppTest: the gallery shows real task examples."""

from streamlit.testing.v1 import AppTest


def test_home_shows_tasks_and_cells():
    at = AppTest.from_file("../dashboard.py", default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Gradient Flow Lab"
    table = at.dataframe[0].value
    assert list(table["task"]) == ["agreement", "adding", "copy"]
    assert table.loc[0, "example"].startswith("the ") and table.loc[0, "example"].split()[-1] in ("was", "were")
    assert list(table["sequence length"]) == [10, 8, 28]
    assert r"h_t = \phi(W_{ih} x_t" in at.latex[0].value and len(at.latex) == 3
