"""The lab's view of one run (live or stored): progress, NaN banner, charts, diagnosis with remedy buttons."""

from __future__ import annotations

import time
from typing import Callable

import pandas as pd
import streamlit as st

from diagnostics.chartdata import LabChartData, at_step, scrub_steps
from diagnostics.chartspecs import at_step_specs
from diagnostics.config import ConfigError, RunConfig
from diagnostics.diagnosis import EXPLODING, VANISHING
from diagnostics.live import LiveRun, RunManager
from diagnostics.outcome import metric_value
from diagnostics.store import FINAL_STATUSES, RunInfo, Store, StoreError, strict_json
from ui.common import session_id
from ui.text import literal

POLL_SECONDS = 1.0
FIRST_STEP_POLL_SECONDS = 0.05
REMEDIES_PER_ROW = 2


def render_run(*, manager: RunManager, store: Store, on_remedy: Callable[[RunConfig], None],
               live: LiveRun | None = None, run_id: int | None = None) -> None:
    """A live and a finished run share one layout (status, NaN banner, charts, then the diagnosis), drawn by one
    fragment that polls every second while the run trains: when it ends, every chart stays where it was and only
    the status line and the diagnosis below the charts change."""
    polling = live is not None and live.state != "done"
    following = not polling and live is None and run_id is not None and _training_elsewhere(store, run_id)
    st.fragment(_run_view, run_every=POLL_SECONDS if polling or following else None)(live, run_id, manager, polling,
                                                                                      following)
    if polling or following:
        return
    run_id = live.run_id if live is not None else run_id
    try:
        info = store.get_run(run_id) if run_id is not None else None
    except StoreError:
        return  # the fragment said so
    if info is None:
        return
    if info.status in FINAL_STATUSES:
        _diagnosis_panel(info, on_remedy)
    else:
        st.subheader("Diagnosis")
        st.info(UNDIAGNOSED[info.status].format(steps=info.steps_done))
    gates_link(store, info.id)


def _training_elsewhere(store: Store, run_id: int) -> bool:
    """A stored run still written by a live process this page does not run (a `watch` script, another server):
    the page follows it through the store."""
    try:
        return store.get_run(run_id).status == "running"
    except StoreError:
        return False


def gates_link(store: Store, run_id: int) -> None:
    """A link to the run's weights on the Gates page, when it kept any."""
    try:
        kept = store.checkpoint_steps(run_id)
    except StoreError:
        return
    if kept:
        st.page_link("app_pages/gates.py", icon=":material/tune:", query_params={"run": str(run_id)},
                     label=f"Look inside run {run_id} on the Gates page: its gates and states on one sentence, with "
                           f"the weights it kept at {len(kept)} steps from {kept[0]} to {kept[-1]}")


def _run_view(live: LiveRun | None, run_id: int | None, manager: RunManager, polling: bool,
              following: bool = False) -> None:
    """Status line, NaN banner and charts, each in a slot of its own so an element never moves to another
    place (which would re-mount it) when the others change. `following`: a run another process trains, read
    from the store at every poll."""
    if polling and live.state == "done":
        st.rerun(scope="app")  # it ended: the final view (diagnosis, remedies) is drawn by the whole page
    status, banner, scrubber, grid = st.container(), st.container(), st.container(), st.container()
    if polling:
        manager.touch(live, session_id())  # a run nobody watches any more is stopped, so it frees its slot
        if live.state == "queued":
            position = manager.queue_position(live)
            status.info("Starting…" if position is None else
                        f"Waiting for a free slot: number {position} in the queue (this server trains "
                        f"{manager.max_concurrent} run(s) at a time).")
            return
        _await_first_step(live)
        if live.run_id is None or live.steps_done == 0:
            _progress(status, live, manager)
            return
        run_id = live.run_id
    else:
        if live is not None and live.error:
            status.error(f"The run failed: {literal(live.error)}")
        run_id = live.run_id if live is not None else run_id
        if run_id is None:
            status.info("The run was stopped before it started.")
            return
    try:  # read and built before anything is drawn, so the page's elements change together
        info = None if polling else manager.store.get_run(run_id)  # the status line of a finished or followed run
        if following and info.status != "running":
            st.rerun(scope="app")  # its script ended: the final view is drawn by the whole page
        data, specs = manager.charts.specs(run_id)
    except StoreError:
        status.warning(f"Run {run_id} is no longer stored: it was deleted (on the Runs page, or to make room in "
                       "this server's store).")
        return
    if polling:
        _progress(status, live, manager)
    elif following:
        _followed_progress(status, info)
    else:
        with status:
            status_line(info)
    with banner:
        _nonfinite_banner(data)
    training = (polling and not live.held) or following
    with scrubber:  # not while it trains: a slider whose choices change under the pointer jumps (see README)
        chosen = None if training else _scrubbed_step(run_id, manager.store.recorded_steps(run_id),
                                                      data.profile_step)
    if chosen is not None:
        specs = at_step_specs(specs, at_step(data, manager.store.time_grads_at(run_id, chosen), chosen))
    with grid:
        _charts(specs)


LATEST = "latest"


def _scrubbed_step(run_id: int, steps: list[int], latest: int | None) -> int | None:
    """A slider over the run's recorded steps for the gradient-through-time profile and its fit; the step a
    viewer chose, or None while it follows the latest."""
    if len(steps) < 2:
        return None
    key = f"scrub-{run_id}"
    chosen = st.session_state.get(key, LATEST)
    if chosen != LATEST and chosen not in steps:
        del st.session_state[key]
        chosen = LATEST
    options = [*scrub_steps(steps, [] if chosen == LATEST else [chosen]), LATEST]
    shown = "" if latest is None else f" (step {latest})"
    # The value is passed, not set in the session state first: set there, the slider showed its first choice.
    st.select_slider("Gradient through time at training step", options, value=chosen, key=key,
                     format_func=lambda s: f"latest{shown}" if s == LATEST else str(s),
                     help="Choose a recorded step: the gradient-back-through-time chart and its fitted gain show "
                          "that step; 'latest' shows the newest finite profile")
    return None if st.session_state[key] == LATEST else st.session_state[key]


def _await_first_step(live: LiveRun) -> None:
    """Wait up to one poll for a starting run's first step, so its first charts come with this poll, not the next."""
    deadline = time.monotonic() + POLL_SECONDS
    while live.state == "running" and live.steps_done == 0 and time.monotonic() < deadline:
        time.sleep(FIRST_STEP_POLL_SECONDS)


def _progress(slot, live: LiveRun, manager: RunManager) -> None:
    total, eta = live.config.steps, live.eta_seconds
    watching = manager.viewer_count(live)
    others = f" · watched by {watching} visitors" if watching > 1 else ""
    if live.held:
        who = "Resume or Step" if live.owner == session_id() else "the visitor who started it resumes or steps it"
        text = f"Paused at step {live.steps_done} / {total} — it waits until {who}"
    elif live.paused:
        text = f"Pausing after step {live.steps_done} / {total}…"
    elif eta is not None:
        text = f"{live.steps_done} / {total} steps · {live.steps_per_second:.1f} steps/s · ETA {eta:.0f} s"
    else:
        text = f"{live.steps_done} / {total} steps"
    slot.progress(min(live.steps_done / total, 1.0), text=text + others)


def _followed_progress(slot, info: RunInfo) -> None:
    """A run another process trains: how far its store says it got (a watched script's length is unknown)."""
    if info.watched:
        text, where = f"Run {info.id}: step {info.steps_done} recorded so far", "its training script"
    else:
        text, where = f"Run {info.id}: {info.steps_done} / {info.config.get('steps') or 0} steps", "another process"
    slot.info(f"{text} · {where} is still training it; this page follows what it records, every "
              f"{POLL_SECONDS:g} s. Its diagnosis comes when it ends.")


def status_line(info: RunInfo) -> None:
    """"Run 3 completed after 800 steps · held-out accuracy 100 % · 4.9 s", green when it completed."""
    summary = info.summary or {}
    text = f"Run {info.id} {info.status} after {info.steps_done} steps"
    if summary.get("final_metric") is not None:
        name = summary.get("metric_name", "metric")
        text += f" · held-out {name} {metric_value(name, summary['final_metric'])}"
    if summary.get("train_seconds") is not None:
        text += f" · {summary['train_seconds']:.1f} s"
    (st.success if info.status == "completed" else st.warning)(text)


def _nonfinite_banner(data: LabChartData) -> None:
    """Name where NaN/Inf first appeared: step, tensor, layer and time step."""
    if data.events.empty:
        return
    first = data.events.sort_values("step", kind="stable").iloc[0]
    where = [f"tensor `{str(first['tensor']).replace('`', chr(39))}`"]  # a backtick would end the code span
    if not pd.isna(first["layer"]):
        lanes, lane = data.facts.lanes, int(first["layer"])
        where.append(literal(lanes[lane]) if 0 <= lane < len(lanes) else f"layer {lane}")
    if not pd.isna(first["time_step"]):
        where.append(f"time step {int(first['time_step'])}")
    st.error(f"Non-finite values (NaN/Inf) first at step {int(first['step'])}: {', '.join(where)}. "
             f"{len(data.events)} non-finite event(s) recorded; red marks on the charts show where.")


# Only a run that ended on its own terms was diagnosed; the others say why not.
UNDIAGNOSED = {
    "interrupted": "No diagnosis: the run's training process died after step {steps} (killed, or its server "
                   "stopped) before the run finished. Everything it recorded is kept and drawn below.",
    "running": "No diagnosis yet: the run is still training (step {steps}); it is diagnosed when it ends.",
}
WATCHED_UNDIAGNOSED = ("Not diagnosed: watch() recorded this run before it gave watched runs verdicts. Its charts "
                       "above show its gradient flow; the NaN/Inf banner, if any, says where it broke.")
KIND_COLOURS = {EXPLODING: "red", VANISHING: "orange"}  # red is also the NaN/Inf colour of every chart


def _diagnosis_panel(info: RunInfo, on_remedy: Callable[[RunConfig], None]) -> None:
    """The verdict first, then each problem in its kind's colour with its remedies, then the notes, collapsed."""
    st.subheader("Diagnosis")
    summary = info.summary or {}
    if info.watched and summary.get("verdict") is None:
        st.info(WATCHED_UNDIAGNOSED)
        return
    diagnoses = summary.get("diagnoses", [])
    # Runs stored before verdicts judged the outcome have no severity: every diagnosis of theirs was a problem.
    problems = [d for d in diagnoses if d.get("severity", "problem") == "problem"]
    notes = [d for d in diagnoses if d.get("severity") == "note"]
    verdict = summary.get("verdict") or ("" if diagnoses else "No exploding or vanishing gradients diagnosed.")
    if problems:
        st.markdown(f"**{verdict}**" if verdict else f"**{len(problems)} problem(s) diagnosed.**")
    elif summary.get("learned"):
        st.success(verdict)
    elif verdict:
        st.info(verdict)
    try:
        config = None if info.watched else RunConfig.from_dict(info.config)  # what a remedy button changes
    except ConfigError:
        config = None
    shown = literal if info.watched else str  # a watched run's messages quote its script's module names
    for kind, colour in KIND_COLOURS.items():  # one box per kind: its rules' findings, then its remedies once
        found = [d for d in problems if d["kind"] == kind]
        if not found:
            continue
        with st.container(border=True):
            st.markdown(f":{colour}-badge[**{kind.capitalize()} gradients**: problem]")
            for d in found:
                st.markdown(f":{colour}[**{d['rule'].replace('_', ' ')}**] {shown(d['message'])}")
            with st.expander("Evidence"):
                st.json({d["rule"]: d["evidence"] for d in found})
            if config is not None and any(d["remedies"] for d in found):
                _remedy_buttons(info.id, kind, found, config, on_remedy)
            elif info.watched:
                _code_remedies(found)
            elif config is not None:
                st.caption("No remedy left to try here: every change the rules know is set already, or a lesson "
                           "shows it failing.")
    if notes:
        harm = ("signals watch cannot call harm or no harm without a task" if info.watched
                else "signals that did no harm to this run")
        with st.expander(f"{len(notes)} note{'s' * (len(notes) != 1)}: {harm}"):
            for d in notes:
                st.markdown(f":gray-badge[{d['kind'].capitalize()} · {d['rule'].replace('_', ' ')}] "
                            f"{shown(d['message'])}")
                st.json(d["evidence"], expanded=False)


def _remedy_buttons(run_id: int, kind: str, found: list[dict], config: RunConfig,
                    on_remedy: Callable[[RunConfig], None]) -> None:
    """Each distinct remedy of the kind's problems once, in the order the rules proposed them."""
    remedies = list({strict_json(r["changes"]): r for d in found for r in d["remedies"]}.values())
    buttons = st.columns(REMEDIES_PER_ROW)  # two per row, so each label is readable in full
    for j, remedy in enumerate(remedies):
        changed = config.replace(**remedy["changes"])
        buttons[j % REMEDIES_PER_ROW].button(
            remedy["label"], key=f"remedy-{run_id}-{kind}-{j}", on_click=on_remedy, args=(changed,),
            width="stretch", help=f"Start a new run with {remedy['changes']}")


def _code_remedies(found: list[dict]) -> None:
    """A watched run has no settings to change: each remedy is the lines to put in its script."""
    remedies = list({r["label"]: r for d in found for r in d["remedies"] if r.get("code")}.values())
    if remedies:
        st.markdown("**What to change in your script** (in this order; `model` and `optimizer` are yours):")
    for remedy in remedies:
        st.markdown(remedy["label"])
        st.code(remedy["code"], language="python")


def _charts(specs) -> None:
    """The charts in their rows; each keeps one element (keyed by its builder) whose data is swapped in place,
    with its subtitle lines as a caption below it."""
    for row in specs:
        for column, spec in zip(st.columns(len(row)), row):
            with column:
                st.vega_lite_chart(spec.with_data(), width="stretch", key=f"lab-{spec.name}")
                st.caption(literal(" · ".join(spec.notes)))
