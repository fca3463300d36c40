"""Gradient Flow Lab: `streamlit run dashboard.py`. The router only; each page lives in app_pages/.

Not in a folder named pages/: Streamlit takes that folder for a legacy multipage app, and on a freshly started
server the first visitor of a deep link (a lesson link, /lab?...) got the legacy app, without this router."""

import streamlit as st

st.set_page_config(page_title="Gradient Flow Lab", layout="wide")
# The header's own Stop ends the viewer's page script, not the run (which the Lab's Stop ends), and froze the
# page for seconds: a viewer needs neither it nor Deploy (.streamlit/config.toml hides that).
st.html("<style>[data-testid='stStatusWidget'] button {display: none;}</style>")
st.navigation([
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/lab.py", title="Lab", icon=":material/science:", url_path="lab"),
    st.Page("app_pages/lesson.py", title="Lessons side by side", icon=":material/school:", url_path="lesson"),
    st.Page("app_pages/gates.py", title="Gates", icon=":material/tune:", url_path="gates"),
    st.Page("app_pages/runs.py", title="Runs", icon=":material/table_rows:", url_path="runs"),
]).run()
