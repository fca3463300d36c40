"""Lab: choose a configuration, train it live, watch the gradient flow, apply a remedy, share the link."""

from __future__ import annotations

import dataclasses

import streamlit as st

from diagnostics.budget import too_big
from diagnostics.config import ConfigError, RunConfig
from diagnostics.live import LiveRun, QueueFull
from ui.common import (config_controls, run_manager, session_config, session_id, session_link,
                       set_session_config, share_link, store, sync_url)
from ui.lab_view import render_run

manager = run_manager()
config = session_config()
link = session_link()
lesson = link.lesson

st.title(f"Lesson {lesson.number}: {lesson.title}" if lesson else "Lab")
shown_problems = ()
if not st.session_state.get("lab_problems_shown"):
    st.session_state.lab_problems_shown = True  # once: the controls own the experiment from here on
    shown_problems = link.problems
    for problem in link.problems:
        st.error(f"{problem[0].upper()}{problem[1:]}.")
    if link.problems and st.query_params.get("autorun") == "1":
        st.info("Because of this, the run does not start by itself: check the settings, then press **Train**.")
if lesson:
    st.markdown(lesson.text)
    variant = lesson.variants[link.variant]
    st.info(f"**{variant.label}** — what to look for: {variant.expect}")
    show_controls = st.toggle("Show the controls", value=False,
                              help="Lessons hide the controls; show them to change the experiment.")
else:
    show_controls = True
    st.caption("Set up an experiment in the sidebar and press **Train**; the charts update while the model "
               "trains. Vanishing gradients show as they are with SGD: Adam rescales tiny gradients and can "
               "hide them.")
if show_controls:
    config = config_controls(config)
sync_url(config)


def current_run() -> LiveRun | None:
    """This browser session's own run: another session's run is never shown or stopped from here."""
    run = manager.get(st.session_state.get("live_handle", 0))
    return run if run is not None and run.owner == session_id() else None


def start(new_config: RunConfig) -> None:
    """Start a run (stopping this session's previous one); used by Train, autorun and remedy buttons."""
    previous = current_run()
    if previous is not None and previous.state != "done":
        manager.stop(previous)
    if new_config != st.session_state.lab_config:
        set_session_config(new_config)
    st.session_state.lab_link = dataclasses.replace(session_link(), run_id=None)  # the new run replaces it
    try:
        st.session_state.live_handle = manager.submit(new_config, owner=session_id()).handle
    except (QueueFull, ConfigError) as e:
        st.session_state.lab_busy = str(e)


if link.autorun and not st.session_state.get("lab_autorun_done"):
    st.session_state.lab_autorun_done = True
    start(config)
if busy := st.session_state.pop("lab_busy", None):
    st.warning(busy)

live = current_run()
running = live is not None and live.state != "done"
oversized = too_big(config)
left, middle, right = st.columns([1, 1, 4])
left.button("Train", type="primary", disabled=running or oversized is not None, on_click=start, args=(config,),
            help="Start a run with these settings" if oversized is None else "These settings are too big to train")
middle.button("Stop", disabled=not running, on_click=lambda: manager.stop(live),
              help="End the run after its current step")
with right.popover("Share this experiment"):
    st.caption("Anyone who opens this link gets the same settings, seed included, and the run starts.")
    st.code(share_link(config), language=None)

if oversized is not None and not any(oversized in problem for problem in shown_problems):
    st.warning(f"{oversized[0].upper()}{oversized[1:]}.")
if live is not None:
    render_run(live=live, manager=manager, store=store(), on_remedy=start)
elif session_link().run_id is not None:
    render_run(run_id=session_link().run_id, manager=manager, store=store(), on_remedy=start)
else:
    st.info("No run yet: press **Train**, or open a lesson from the Home page.")
