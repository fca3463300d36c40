"""Lesson: one page for a lesson's variants — they train together, and its key charts overlay them.

It opens the variants' runs through the server's `RunManager` (one run per experiment: a variant already stored
or training is shown, not trained again) and renders; the charts come from `diagnostics.lesson_compare`.
"""

from __future__ import annotations

import streamlit as st

from diagnostics.config import ConfigError, sentence
from diagnostics.chartdata import scrub_steps
from diagnostics.lesson_compare import lesson_specs, scrubbed_profiles
from diagnostics.lessons import LESSONS, lesson as find_lesson
from diagnostics.limits import client_address
from diagnostics.live import QueueFull, RunManager
from diagnostics.links import share_params
from diagnostics.store import FINAL_STATUSES, StoreError
from ui.common import run_manager, session_id
from ui.lab_view import POLL_SECONDS, status_line
from ui.text import literal

manager = run_manager()

def lesson_links() -> None:
    for item in LESSONS:
        if len(item.variants) > 1:
            st.page_link("app_pages/lesson.py", label=f"{item.number}. {item.title}",
                         query_params={"lesson": item.slug})


requested = st.query_params.get("lesson")
if not requested:
    st.title("Lessons side by side")
    st.caption("A lesson with several variants trains them together and overlays their charts on one page:")
    lesson_links()
    st.stop()
try:
    lesson = find_lesson(requested)
except ValueError as e:
    st.title("Lesson")
    st.error(literal(f"{sentence(e)}."))  # it quotes what the link said
    lesson_links()
    st.stop()

st.title(f"Lesson {lesson.number}: {lesson.title}")
st.markdown(lesson.text)



def run_id_of(opened) -> int | None:
    if isinstance(opened, str):
        return None
    return opened.stored_run if opened.stored_run is not None else opened.live.run_id


def usable(opened) -> bool:
    """Whether what a variant got still stands: not a refusal, and not a run that ended without its result
    (stopped because nobody watched it for a while); those are opened again when the page is drawn."""
    if isinstance(opened, str):
        return False
    if opened.live is None or opened.live.state != "done":
        return True
    run_id = opened.live.run_id
    try:
        return run_id is not None and manager.store.get_run(run_id).status in FINAL_STATUSES
    except StoreError:
        return False


# Each variant is opened (its stored run, the live run another visitor started, or a new run) once, and again
# only when what it got does not stand; a poll of the page never starts anything.
key = f"lesson-runs-{lesson.slug}"
kept = st.session_state.get(key, {})
if len(kept) != len(lesson.variants) or not all(usable(o) for o in kept.values()):
    address = client_address(st.context.ip_address, st.context.headers)
    for variant in lesson.variants:
        if variant.label in kept and usable(kept[variant.label]):
            continue
        try:
            kept[variant.label] = manager.open(variant.config, session_id(), address=address)
        except (QueueFull, ConfigError) as e:
            kept[variant.label] = str(e)
    st.session_state[key] = kept


def live_of(opened):
    return None if isinstance(opened, str) or opened.live is None else opened.live


@st.cache_resource(max_entries=64, show_spinner=False)
def shared_specs(slug: str, state: tuple, _manager: RunManager):
    """The lesson's chart specs for one state of its runs ((label, run id, steps, status) each), built once for
    every viewer of the lesson."""
    chosen = find_lesson(slug)
    ids = {label: run_id for label, run_id, _, _ in state}
    data = {label: _manager.charts.get(run_id) for label, run_id in ids.items()}
    return lesson_specs(chosen, _manager.store, data, ids)


def variant_status(variant, opened) -> None:
    st.markdown(f"**{variant.label}**")
    st.caption(f"What to look for: {variant.expect}")
    if isinstance(opened, str):
        st.warning(literal(opened))
        return
    live = live_of(opened)
    if live is not None and live.state != "done":
        manager.touch(live, session_id())  # watched: a run nobody watches is stopped to free its slot
        if live.state == "queued":
            position = manager.queue_position(live)
            st.info("Starting…" if position is None else f"Waiting for a free slot (number {position}).")
        elif live.held:
            st.info(f"Paused at step {live.steps_done} / {live.config.steps}")
        else:
            st.info(f"Training: {live.steps_done} / {live.config.steps} steps")
        return
    run_id = run_id_of(opened)
    if run_id is None:
        st.info("It was stopped before it started.")
        return
    try:
        info = manager.store.get_run(run_id)
    except StoreError:
        st.warning(f"Run {run_id} is no longer stored.")
        return
    status_line(info)
    if (info.summary or {}).get("verdict"):
        st.caption(literal(info.summary["verdict"]))
    st.page_link("app_pages/lab.py", label="Open it in the Lab: all its charts and the diagnosis",
                 icon=":material/science:", query_params={"run": str(run_id)})


def live_variants() -> list:
    return [live for o in st.session_state[key].values()
            if (live := live_of(o)) is not None and live.state != "done"]


def for_all(action) -> None:
    """Pause, resume or step every live variant (each refuses a session that did not start it)."""
    for live in live_variants():
        action(live, session_id())


def controls() -> bool:
    """Pause / Resume / Step for all the variants at once; whether the page may offer its scrubber (nothing
    trains: every variant ended or holds)."""
    live = live_variants()
    mine = [run for run in live if run.owner == session_id() and run.state == "running"]
    paused = bool(mine) and all(run.paused for run in mine)
    pause, step, _ = st.columns([1, 1, 4])
    not_yours = "" if mine or not live else " (only the visitor who started these runs can)"
    pause.button("Resume all" if paused else "Pause all", disabled=not mine, key="lesson-pause",
                 on_click=for_all, args=(manager.resume if paused else manager.pause,),
                 help="Hold every variant after its current step, so the class can look; again to go on" + not_yours)
    step.button("Step all", disabled=not paused, key="lesson-step", on_click=for_all, args=(manager.step,),
                help="Every paused variant takes one more optimiser step, then holds again" + not_yours)
    return all(run.held for run in live)


def scrubbed_step(run_ids: dict[str, int]) -> int | None:
    """A slider over the variants' recorded steps for the profile chart; the step chosen, None for the lesson's
    own comparison."""
    steps = sorted({s for run_id in run_ids.values() for s in manager.store.recorded_steps(run_id)})
    if len(steps) < 2:
        return None
    own = "first and last" if lesson.profile_ends else "latest"
    options = [own, *scrub_steps(steps, [st.session_state.get("lesson-scrub")])]
    if st.session_state.get("lesson-scrub", own) not in options:
        st.session_state.pop("lesson-scrub", None)
    choice = st.select_slider("Gradient through time at training step", options,
                              value=st.session_state.get("lesson-scrub", own), key="lesson-scrub",
                              help="Each variant's recorded step nearest this one, on the profile chart")
    return None if choice == own else choice


def lesson_view(polling: bool) -> None:
    if polling and not live_variants():
        st.rerun(scope="app")  # the last variant ended: the page is drawn once more, still
    opened = st.session_state[key]
    still = controls()
    columns = st.columns(len(lesson.variants))
    for column, variant in zip(columns, lesson.variants):
        with column:
            variant_status(variant, opened[variant.label])
    state = []
    for variant in lesson.variants:
        run_id = run_id_of(opened[variant.label])
        if run_id is None:
            continue
        try:
            info = manager.store.get_run(run_id)
        except StoreError:
            continue
        if info.steps_done:
            state.append((variant.label, run_id, info.steps_done, info.status))
    if not state:
        st.info("The charts appear with the variants' first steps.")
        return
    try:
        specs = shared_specs(lesson.slug, tuple(state), manager)
        run_ids = {label: run_id for label, run_id, _, _ in state}
        chosen = scrubbed_step(run_ids) if still else None
        if chosen is not None:  # this viewer's own profile chart; the others stay shared
            specs = (*specs[:-1], scrubbed_profiles(lesson, manager.store, run_ids, chosen))
    except StoreError as e:
        st.warning(f"A run of this lesson is no longer stored: {literal(e)}.")
        return
    for spec in specs:
        st.vega_lite_chart(spec.with_data(), width="stretch", key=spec.name)
        st.caption(literal(" · ".join(spec.notes)))


polling = bool(live_variants())
st.fragment(lesson_view, run_every=POLL_SECONDS if polling else None)(polling)

st.divider()
st.caption("Each variant on its own, with every chart, in the Lab:")
for k, variant in enumerate(lesson.variants):
    st.page_link("app_pages/lab.py", label=f"{variant.label} ▶", query_params=share_params(lesson, k))
