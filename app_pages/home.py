"""Home: what this is, the lessons (each a link that opens the lab and runs it), the models and tasks."""

import streamlit as st

from diagnostics.gallery import cell_table, task_examples
from diagnostics.lessons import LESSONS
from diagnostics.links import share_params

st.title("Gradient Flow Lab")
st.markdown(
    "Watch gradients explode and vanish inside a recurrent network while it trains. Every hidden state and "
    "gate is recorded, so you can see why a tanh RNN forgets the subject of a long sentence and an LSTM does not."
)
st.subheader("Lessons")
st.caption("Each link opens the Lab in this tab with the lesson's settings (seed included) and starts training; "
           "a lesson with several variants also has one page that trains them together and overlays their charts.")
columns = st.columns(3)
for i, lesson in enumerate(LESSONS):
    with columns[i % 3].container(border=True):
        st.markdown(f"**{lesson.number}. {lesson.title}**")
        st.caption(lesson.text)
        if len(lesson.variants) > 1:
            st.page_link("app_pages/lesson.py", label=f"All {len(lesson.variants)} side by side ▶",
                         icon=":material/compare:", query_params={"lesson": lesson.slug})
        for k, variant in enumerate(lesson.variants):
            st.page_link("app_pages/lab.py", label=f"{variant.label} ▶", query_params=share_params(lesson, k))

st.subheader("Tasks")
st.caption("Each task needs memory across `seq_len` steps; a model without memory scores the baseline.")
st.dataframe(task_examples(), hide_index=True, width="stretch")
st.subheader("Cells")
for row in cell_table().to_dict("records"):
    st.markdown(f"**{row['cell']}** — gates recorded: {row['gates recorded']}")
    st.latex(row["equation"])
