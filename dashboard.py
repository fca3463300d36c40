"""Gradient Flow Lab: `streamlit run dashboard.py`. The router only; each page lives in pages/."""

import streamlit as st

st.set_page_config(page_title="Gradient Flow Lab", layout="wide")
home = st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)
st.navigation([home]).run()
