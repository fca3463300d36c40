"""Home: what this is, and the models and tasks the lab trains."""

import streamlit as st

from diagnostics.gallery import cell_table, task_examples

st.title("Gradient Flow Lab")
st.markdown(
    "Watch gradients explode and vanish inside a recurrent network while it trains. "
    "Every hidden state and gate is recorded, so you can see why a tanh RNN forgets the subject of a long "
    "sentence and an LSTM does not."
)
st.subheader("Tasks")
st.caption("Each task needs memory across `seq_len` steps; a model without memory scores the baseline.")
st.dataframe(task_examples(), hide_index=True, width="stretch")
st.subheader("Cells")
for row in cell_table().to_dict("records"):
    st.markdown(f"**{row['cell']}** — gates recorded: {row['gates recorded']}")
    st.latex(row["equation"])
