"""Lab: choose a configuration, train it live, watch the gradient flow, apply a remedy, share the link."""

from __future__ import annotations

import dataclasses

import streamlit as st

from diagnostics.config import ConfigError, RunConfig, sentence
from diagnostics.limits import client_address
from diagnostics.live import LiveRun, QueueFull
from ui.common import (config_controls, follow_new_link, run_manager, session_config, session_id, session_link,
                       set_session_config, share_link, store, sync_url, watched_run_label)
from ui.lab_view import render_run
from ui.text import literal

manager = run_manager()
watched = manager.get(st.session_state.get("live_handle", 0))
if follow_new_link():  # opened in this tab with another experiment: leave the run this session watched
    if watched is not None and watched.state != "done":
        manager.leave(watched, session_id())
    st.session_state.live_handle = 0
config = session_config()
link = session_link()
lesson = link.lesson

st.title(f"Lesson {lesson.number}: {lesson.title}" if lesson else "Lab")
# Everything that comes and goes above the run's view sits in fixed containers, so the charts below keep their
# place on the page (a chart that moves is drawn again from scratch).
link_notices = st.container()
shown_problems = ()
if not st.session_state.get("lab_problems_shown"):
    st.session_state.lab_problems_shown = True  # once: the controls own the experiment from here on
    shown_problems = link.problems
    for problem in link.problems:
        link_notices.error(literal(f"{sentence(problem)}."))  # it quotes what the link said
    if link.problems and st.query_params.get("autorun") == "1":
        link_notices.info("Because of this, the run does not start by itself: check the settings, then press "
                          "**Train**.")
if lesson:
    st.markdown(lesson.text)
    variant = lesson.variants[link.variant]
    st.info(f"**{variant.label}** — what to look for: {variant.expect}")
    if len(lesson.variants) > 1:
        st.page_link("app_pages/lesson.py", label=f"All {len(lesson.variants)} variants of this lesson side by side",
                     icon=":material/compare:", query_params={"lesson": lesson.slug})
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
    """The live run this browser session watches (its own or one it joined); others are never shown here."""
    run = manager.get(st.session_state.get("live_handle", 0))
    return run if run is not None and session_id() in run.viewers else None


def start(new_config: RunConfig, fresh: bool = False) -> None:
    """Open the experiment `new_config` (leaving the run this session watched): its stored result, the live run
    another visitor started, or a new run; `fresh` trains a new one. Used by Train, autorun and remedies."""
    previous = current_run()
    if previous is not None and previous.state != "done":
        manager.leave(previous, session_id())
    if new_config != st.session_state.lab_config:
        set_session_config(new_config)
    st.session_state.live_handle = 0
    st.session_state.pop("lab_left", None)
    st.session_state.lab_link = dataclasses.replace(session_link(), run_id=None)  # the new run replaces it
    try:
        address = client_address(st.context.ip_address, st.context.headers)
        opened = manager.open(new_config, session_id(), address=address, fresh=fresh)
    except (QueueFull, ConfigError) as e:
        st.session_state.lab_busy = str(e)
        return
    if opened.stored_run is not None:
        st.session_state.lab_link = dataclasses.replace(session_link(), run_id=opened.stored_run)
        st.session_state.lab_reused = "stored"
    else:
        st.session_state.live_handle = opened.live.handle
        st.session_state.lab_reused = "joined" if opened.joined else None


def rejoin(run: LiveRun) -> None:
    st.session_state.pop("lab_left", None)
    if manager.rejoin(run, session_id()):
        st.session_state.live_handle = run.handle
    else:
        st.session_state.lab_busy = "That run has ended meanwhile; its stored result is on the Runs page."


def pause(run: LiveRun) -> None:
    manager.pause(run, session_id())


def resume(run: LiveRun) -> None:
    manager.resume(run, session_id())


def step(run: LiveRun) -> None:
    manager.step(run, session_id())


def reset(new_config: RunConfig) -> None:
    """Start the experiment over from step 0 as a fresh run (the one watched now is left, or stopped if alone)."""
    start(new_config, fresh=True)


def stop(run: LiveRun) -> None:
    if not manager.leave(run, session_id()):
        st.session_state.lab_left = run.handle  # others watch it: it trains on, and this page offers to rejoin


if link.autorun and not st.session_state.get("lab_autorun_done"):
    st.session_state.lab_autorun_done = True
    start(config)
if busy := st.session_state.pop("lab_busy", None):
    link_notices.warning(literal(busy))
    shown_problems = (*shown_problems, busy)

live = current_run()
running = live is not None and live.state != "done"
controls = running and live.state == "running" and live.owner == session_id()  # pause and step: its starter only
oversized = manager.refusal(config)
train_col, stop_col, pause_col, step_col, reset_col, share_col = st.columns([1, 1, 1.2, 1, 1, 3])
train_col.button("Train", type="primary", disabled=running or oversized is not None, on_click=start,
                 args=(config,), help="Start a run with these settings" if oversized is None else
                 "This server does not train these settings")
stop_col.button("Stop", disabled=not running, on_click=stop, args=(live,),
                help="End the run after its current step (a run others are watching keeps training for them)")
paused = running and live.paused
not_yours = "" if controls or not running else " (only the visitor who started this run can)"
# The action is the one the visitor saw on the button: a click on a "Pause" drawn before the run held never resumes.
pause_col.button("Resume" if paused else "Pause", disabled=not controls, on_click=resume if paused else pause,
                 args=(live,),
                 help=("Go on training" if paused else "Hold the run after its current step; everyone watching "
                       "it sees it hold") + not_yours)
step_col.button("Step", disabled=not (controls and paused), on_click=step, args=(live,),
                help="Take one more optimiser step and show it, then hold again (pause first)" + not_yours)
reset_col.button("Reset", disabled=oversized is not None or (live is None and session_link().run_id is None),
                 on_click=reset, args=(config,), help="Train this experiment again from step 0, as a fresh run")
with share_col.popover("Share this experiment"):
    st.caption("Anyone who opens this link gets the same settings, seed included, and the run starts.")
    st.code(share_link(config), language=None)

notices = st.container()
if oversized is not None and not any(oversized[1:] in problem for problem in shown_problems):
    notices.warning(literal(f"{sentence(oversized)}."))
left_run = manager.get(st.session_state.get("lab_left", 0))
if left_run is not None and left_run.state != "done" and live is None:
    others = manager.viewer_count(left_run)
    notices.info(f"You left the run; {others} other visitor(s) are watching it, so it keeps training for them "
                 f"({left_run.steps_done} of {left_run.config.steps} steps so far).")
    notices.button("Watch it again", on_click=rejoin, args=(left_run,),
                   help="Rejoin the run the others are watching")
else:
    left_run = None
reused = st.session_state.get("lab_reused")
if reused and (live is not None or session_link().run_id is not None):
    notices.caption("This exact experiment, seed included, " + (
        "was trained already: this is its stored run (runs are deterministic, so training it again gives the "
        "same numbers)." if reused == "stored" and live is None else
        "is being trained for another visitor: you are watching the same run." if running else
        "was trained for another visitor: you watched the same run."))
    if not running:
        notices.button("Train a fresh run", on_click=start, args=(config, True), disabled=oversized is not None,
                       help="Train this experiment again as a new run of your own")
if live is not None:
    render_run(live=live, manager=manager, store=store(), on_remedy=start)
elif session_link().run_id is not None:
    if watched_label := watched_run_label(session_link().run_id):
        notices.info(f"{literal(watched_label)}: recorded by `watch` in a training script, not trained here. The "
                     "charts are its own; the controls hold the settings of a new Lab experiment, which this run "
                     "did not use.")
    render_run(run_id=session_link().run_id, manager=manager, store=store(), on_remedy=start)
elif left_run is None:
    st.info("No run yet: press **Train**, or open a lesson from the Home page.")
