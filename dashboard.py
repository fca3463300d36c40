"""Gradient Flow Lab: `streamlit run dashboard.py`. The router only; each page lives in app_pages/.

Not in a folder named pages/: Streamlit takes that folder for a legacy multipage app, and on a freshly started
server the first visitor of a deep link (a lesson link, /lab?...) got the legacy app, without this router."""

import streamlit as st

st.set_page_config(page_title="Gradient Flow Lab", layout="wide")
st.navigation([
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/lab.py", title="Lab", icon=":material/science:", url_path="lab"),
    st.Page("app_pages/gates.py", title="Gates", icon=":material/tune:", url_path="gates"),
    st.Page("app_pages/runs.py", title="Runs", icon=":material/table_rows:", url_path="runs"),
]).run()
