"""Home page through Streamlit's AppTest: the gallery shows real task examples."""

import re

from streamlit.testing.v1 import AppTest

from diagnostics.lessons import LESSONS
from diagnostics.links import share_query


def test_home_shows_tasks_and_cells():
    at = AppTest.from_file("../dashboard.py", default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Gradient Flow Lab"
    table = at.dataframe[0].value
    assert list(table["task"]) == ["agreement", "adding", "copy"]
    assert table.loc[0, "example"].startswith("the ") and table.loc[0, "example"].split()[-1] in ("was", "were")
    assert list(table["sequence length"]) == [10, 8, 28]
    assert r"h_t = \phi(W_{ih} x_t" in at.latex[0].value and len(at.latex) == 3


def test_every_lesson_is_a_card_with_one_link_per_run():
    at = AppTest.from_file("../dashboard.py", default_timeout=60).run()
    markdown = [m.value for m in at.markdown]
    for lesson in LESSONS:
        assert f"**{lesson.number}. {lesson.title}**" in markdown
        [links] = [m for m in markdown if f"lesson={lesson.slug}&" in m]
        found = re.findall(r"\[(.+?) ▶\]\(lab\?(.+?)\)", links)
        assert found == [(v.label, share_query(lesson, k)) for k, v in enumerate(lesson.variants)]
    texts = sorted(c.value for c in at.caption if c.value in {item.text for item in LESSONS})
    assert texts == sorted(item.text for item in LESSONS)  # each card explains its lesson
