"""What several pages share: the server-wide run manager, the store, and config controls built from
`RunConfig`'s fields (so a new field is a new control without a second list)."""

from __future__ import annotations

import dataclasses
import uuid

import streamlit as st

from diagnostics.config import GROUPS, ConfigError, RunConfig, applies, field_map
from diagnostics.description import ModelDescription
from diagnostics.links import Link, parse_link
from diagnostics.live import RunManager
from diagnostics.store import Store, StoreError, default_db_path
from ui.text import literal

KEY = "cfg_"  # session-state prefix of the config widgets


def run_manager() -> RunManager:
    """One manager per server process and store file, so the concurrent-run cap holds across sessions; a
    foreign store file stops the page with the reason."""
    try:
        return _manager_for(str(default_db_path()))
    except StoreError as e:  # cache_resource does not cache a raised error, so a fixed file is retried
        st.error(f"The run store cannot be opened: {literal(e)}. Set GFL_DB to another file and restart the "
                 "dashboard.")
        st.stop()
    except ValueError as e:  # a limit's environment variable (see diagnostics.limits)
        st.error(f"The server's limits cannot be read: {literal(e)}. Fix the variable and restart the dashboard.")
        st.stop()


@st.cache_resource
def _manager_for(db_path: str) -> RunManager:
    return RunManager(db_path)


def store() -> Store:
    """The run store ($GFL_DB or runs/runs.sqlite)."""
    return run_manager().store


def session_id() -> str:
    """An id for this browser session: a run belongs to the session that started it."""
    if "session_id" not in st.session_state:
        st.session_state.session_id = uuid.uuid4().hex
    return st.session_state.session_id


def _stored_config(run_id: int) -> dict:
    try:
        info = store().get_run(run_id)
    except StoreError:
        raise LookupError(f"no run {run_id} is stored (the Runs page lists them)") from None
    return info.config  # {} for a run `watch` recorded: the Lab draws it, its controls keep their defaults


def watched_run_label(run_id: int) -> str | None:
    """"Run 7, watched my-model: lstm lstm H64x2 bidirectional" for a run `watch` recorded; None for the rest."""
    try:
        info = store().get_run(run_id)
    except StoreError:
        return None
    if not info.watched:
        return None
    return f"Run {run_id}, {ModelDescription.from_dict(info.description).summary()}"


def session_link() -> Link:
    """What the link that opened this session asked for; the URL decides the experiment on the session's first
    page view only, after that the controls do (opening a link starts a new session)."""
    if "lab_link" not in st.session_state:
        params = st.query_params.to_dict()
        link = parse_link(params, _stored_config)
        st.session_state.lab_link, st.session_state.lab_config = link, link.config
        st.session_state.lab_url = params
    return st.session_state.lab_link


LINK_STATE = ("lab_link", "lab_config", "lab_url", "lab_problems_shown", "lab_autorun_done", "lab_reused",
              "lab_left")  # what a session keeps of the link that opened the Lab


def follow_new_link() -> bool:
    """Whether the Lab was opened in this tab with a link other than the address it last wrote (a lesson link on
    Home, a run on Runs): then the link's experiment replaces the session's, as a link in a new tab would."""
    params = st.query_params.to_dict()
    if "lab_link" not in st.session_state or not params or params == st.session_state.get("lab_url"):
        return False  # the session's own address, or the Lab reached through the page menu (no query)
    for key in LINK_STATE:
        st.session_state.pop(key, None)
    _forget_controls()
    return True


def session_config() -> RunConfig:
    session_link()
    return st.session_state.lab_config


def set_session_config(config: RunConfig) -> None:
    """Replace the experiment (e.g. a remedy); the controls re-read it on the next run."""
    st.session_state.lab_config = config
    _forget_controls()


def _forget_controls() -> None:
    """Drop the config widgets' values, so the controls are built again from `lab_config`."""
    for name in field_map():
        st.session_state.pop(KEY + name, None)


def label(name: str) -> str:
    return field_map()[name].metadata["label"]


def _control(f: dataclasses.Field, current: RunConfig) -> None:
    m = f.metadata
    key, disabled = KEY + f.name, not applies(f, current)
    help_text = m["help"] + (" (does not apply to the current settings)" if disabled else "")
    if m["choices"]:
        st.selectbox(label(f.name), m["choices"], key=key, help=help_text, disabled=disabled)
    elif f.type == "int":
        st.number_input(label(f.name), min_value=int(m["lo"]), max_value=int(m["hi"]), step=1, key=key,
                        help=help_text, disabled=disabled)
    else:
        st.number_input(label(f.name), min_value=float(m["lo"]), max_value=float(m["hi"]), format="%g",
                        key=key, help=help_text, disabled=disabled)


def config_controls(config: RunConfig) -> RunConfig:
    """Sidebar controls for every config field, grouped, advanced ones collapsed; returns the new config."""
    for name, value in config.to_dict().items():
        st.session_state.setdefault(KEY + name, value)
    try:  # the widgets' values already hold this rerun's change, so "does not apply" follows it at once
        config = _from_widgets()
    except ConfigError:
        pass
    fields = dataclasses.fields(RunConfig)
    for group in GROUPS:
        in_group = [f for f in fields if f.metadata["group"] == group]
        st.sidebar.subheader(group.capitalize())
        with st.sidebar:
            for f in in_group:
                if not f.metadata["advanced"]:
                    _control(f, config)
        advanced = [f for f in in_group if f.metadata["advanced"]]
        if advanced:
            with st.sidebar.expander(f"Advanced: {group}"):
                for f in advanced:
                    _control(f, config)
    try:
        st.session_state.lab_config = _from_widgets()
    except ConfigError as e:
        st.sidebar.error(str(e))
    return st.session_state.lab_config


def _from_widgets() -> RunConfig:
    return RunConfig.from_dict({name: st.session_state[KEY + name] for name in field_map()})


def sync_url(config: RunConfig) -> None:
    """Keep the page URL equal to the config (seed included) and the link's lesson or run, so the address bar
    is always a share link."""
    wanted = session_link().query(config)
    st.session_state.lab_url = wanted
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)


def share_link(config: RunConfig) -> str:
    """The page's address with `Link.share_query`: anyone who opens it gets this experiment, started."""
    base = st.context.url.split("?")[0] if st.context.url else ""
    return f"{base}?{session_link().share_query(config)}"
