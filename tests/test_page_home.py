"""Home page through Streamlit's AppTest: the gallery shows real task examples."""

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


def test_every_lesson_is_a_card_with_one_link_per_run_that_opens_the_lab_in_this_tab():
    at = AppTest.from_file("../dashboard.py", default_timeout=60).run()
    markdown = [m.value for m in at.markdown]
    links = [link.proto for link in at.get("page_link")]  # page links switch pages in the same tab
    for lesson in LESSONS:
        assert f"**{lesson.number}. {lesson.title}**" in markdown
        found = [(link.label, link.query_string) for link in links if f"lesson={lesson.slug}&" in link.query_string]
        assert found == [(f"{v.label} ▶", share_query(lesson, k)) for k, v in enumerate(lesson.variants)]
    side_by_side = [(link.label, link.query_string) for link in links if link.page == "lesson"]
    assert sorted(side_by_side) == sorted((f"All {len(item.variants)} side by side ▶", f"lesson={item.slug}")
                                          for item in LESSONS if len(item.variants) > 1)
    assert {link.page for link in links} == {"lab", "lesson"}
    assert len(links) == sum(len(lesson.variants) for lesson in LESSONS) + len(side_by_side)
    texts = sorted(c.value for c in at.caption if c.value in {item.text for item in LESSONS})
    assert texts == sorted(item.text for item in LESSONS)  # each card explains its lesson
