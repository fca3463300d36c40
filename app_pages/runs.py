"""Runs: every stored run in a table; filter, open in the lab, compare up to four, download, delete."""

from __future__ import annotations

import streamlit as st

from diagnostics import rundata as rd
from diagnostics.chartdata import scrub_steps
from diagnostics.compare import (MAX_COMPARED, SHOWN_RUNS, SUMMARY_KEYS, TABLE_FIELDS, compare_labels,
                                 config_differences, filter_runs, run_label, runs_frame)
from diagnostics.compare_charts import (CHOICES, LABELS, TIME_PROFILE, compare_chart, compare_profile_chart,
                                        compare_profiles, compare_series)
from diagnostics.config import CELLS, TASK_NAMES, field_map
from diagnostics.store import StoreError
from diagnostics.train import STATUSES
from ui.common import run_manager, session_id, store
from ui.lab_view import gates_link
from ui.text import literal


def compared_charts(picked, shown, run_ids, data) -> None:
    """The chosen charts of the compared runs, one per row: their legends name the runs, which takes width."""
    for quantity in shown:
        if quantity == TIME_PROFILE:
            steps = sorted({s for run in picked for s in runs_store.recorded_steps(run.id)})
            if not steps:
                st.info("None of these runs recorded gradients through time (record_every 0).")
                continue
            options = scrub_steps(steps, [st.session_state.get("compare-step")])  # the chosen one stays
            if st.session_state.get("compare-step") not in options:  # other runs picked: their first step
                st.session_state.pop("compare-step", None)
            step = options[0] if len(options) == 1 else st.select_slider(
                "Gradient through time at training step", options, value=options[0], key="compare-step",
                help="Each run shows its recorded step nearest this one.")
            st.altair_chart(compare_profile_chart(compare_profiles(runs_store, run_ids, step), step),
                            width="stretch")
        else:
            st.altair_chart(compare_chart(compare_series(runs_store, data, run_ids, quantity), quantity,
                                          list(run_ids)), width="stretch")  # a run keeps its colour


st.title("Runs")
manager = run_manager()
runs_store = store()
runs = runs_store.list_runs(summary_keys=SUMMARY_KEYS, limit=SHOWN_RUNS)
if not runs:
    st.info("No runs stored yet. Train one in the **Lab**, or from a shell: `python -m diagnostics train`.")
    st.stop()

left, middle, right = st.columns(3)
cells = left.multiselect("Cell", CELLS)
tasks = middle.multiselect("Task", TASK_NAMES)
statuses = right.multiselect("Status", ("running", *STATUSES))
table = filter_runs(runs_frame(runs), cells, tasks, statuses)
stored = runs_store.count_runs() if len(runs) == SHOWN_RUNS else len(runs)
newest = f" (the newest {SHOWN_RUNS} of {stored} stored)" if stored > len(runs) else ""
st.caption(f"{len(table)} of {len(runs)} runs{newest}. Status `interrupted` means the training process died; "
           "everything it wrote is kept. Pinned runs (lesson runs) are kept when the server makes room for new ones; "
           "the oldest others may be deleted then.")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={**{name: st.column_config.Column(field_map()[name].metadata["label"], help=name)
                               for name in TABLE_FIELDS},  # as the sidebar names them; the field in the help
                            "final loss": st.column_config.NumberColumn(format="%.4g"),
                            "held-out metric": st.column_config.NumberColumn(format="%.4g")})

by_id = {r.id: r for r in runs}
chosen = st.multiselect(f"Pick runs to open or compare (up to {MAX_COMPARED})", list(table["id"]),
                        max_selections=MAX_COMPARED, format_func=lambda i: run_label(by_id[i]))
picked = [by_id[i] for i in chosen]

watched = [run.id for run in picked if run.watched]
if len(picked) == 1:
    run = picked[0]
    st.subheader(run_label(run))
    if run.watched:
        st.page_link("app_pages/lab.py", icon=":material/science:", query_params={"run": str(run.id)},
                     label=f"Open run {run.id} in the Lab: its charts" + (", live while its script trains it"
                                                                          if run.status == "running" else ""))
    else:
        st.page_link("app_pages/lab.py", label=f"Open run {run.id} in the Lab: its charts, diagnosis and settings",
                     icon=":material/science:", query_params={"run": str(run.id)})
    gates_link(runs_store, run.id)
    st.download_button("Download it as CSV (ZIP: metrics, time_grads, gates, events, run.json)",
                       lambda: runs_store.export_zip(run.id), file_name=f"run-{run.id}-csv.zip",
                       mime="application/zip", on_click="ignore")  # built only when clicked
    with st.expander(f"Delete run {run.id}"):
        token = None
        if not manager.may_delete(run.id, session_id()):
            st.caption(f"Only the browser session that made run {run.id} can delete it, or this server's operator "
                       "with their token.")
            token = st.text_input("Operator token", type="password", key=f"token-{run.id}")
        allowed = manager.may_delete(run.id, session_id(), token)
        sure = st.checkbox(f"Yes, delete run {run.id} and everything recorded for it", disabled=not allowed)
        if st.button("Delete", disabled=not (sure and allowed), type="primary"):
            try:
                if not manager.may_delete(run.id, session_id(), token):  # checked again when it acts
                    raise StoreError("this session did not make it, and no valid operator token was given")
                runs_store.delete(run.id)
            except StoreError as e:
                st.error(f"Run {run.id} was not deleted: {literal(e)}.")
            else:
                st.success(f"Deleted run {run.id}.")
                st.rerun()
elif len(picked) > 1:
    st.subheader(f"Comparing {len(picked)} runs")
    differences = config_differences(picked)
    if watched:
        st.caption(f"Run{'s' * (len(watched) > 1)} {', '.join(f'#{i}' for i in watched)}: recorded by `watch` in a "
                   "training script, with no settings to set beside the others'; "
                   + ("its" if len(watched) == 1 else "their") + " charts are overlaid as they are.")
    if len(picked) - len(watched) >= 2:  # two lab runs' settings to set side by side
        if differences.empty:
            st.info("These runs have identical settings.")
        else:
            st.caption("Settings that differ between the runs (highlighted):")
            st.dataframe(differences.astype(str).style.set_properties(**{"background-color": "#fff3b0"}),
                         width="stretch")
    shown = st.multiselect("Charts", list(CHOICES), default=[rd.LOSS, rd.HELDOUT_METRIC, TIME_PROFILE],
                           format_func=LABELS.get, key="compare-charts",
                           help="Every chart the Lab draws, with the runs overlaid.")
    labels = compare_labels(picked)
    run_ids = {labels[run.id]: run.id for run in picked}
    try:
        data = {labels[run.id]: manager.charts.get(run.id) for run in picked}
    except StoreError as e:
        st.error(f"The runs cannot be compared: {literal(e)}.")
        st.stop()
    try:
        compared_charts(picked, shown, run_ids, data)
    except StoreError as e:  # a compared run was deleted meanwhile
        st.error(f"The runs cannot be compared any more: {literal(e)}.")

