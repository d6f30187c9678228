"""The loaded (baseline) scenario and uploaded files, kept in the session.

The baseline is held as YAML text plus the directory its relative paths resolve from, so cached
computations can key on plain strings. Uploads are written once, content-addressed, into this
session's private directory (``dashboard/uploads.py``), so a scenario can refer to an uploaded trace or
profile by path; a scenario may refer to no other file but those shipped with capsim.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from dashboard import uploads
from sim.errors import CapsimError, TraceError
from sim.scenario.examples import DEFAULT_EXAMPLE, list_examples
from sim.scenario.load import dump_scenario, scenario_from_yaml_text
from sim.scenario.model import Scenario
from sim.scenario.yaml_reader import read_yaml

DEFAULT_SCENARIO = list_examples()[DEFAULT_EXAMPLE]
_KEY = "capsim_baseline"
_UPLOADS = "capsim_uploads"


@dataclass(frozen=True)
class Baseline:
    yaml_text: str
    base_dir: str
    source: str  # where it came from, in words

    @property
    def scenario(self) -> Scenario:
        return scenario_from_yaml_text(self.yaml_text, self.base_dir, self.source)


def default_baseline() -> Baseline:
    return Baseline(DEFAULT_SCENARIO.read_text(), str(DEFAULT_SCENARIO.parent),
                    f"the {DEFAULT_EXAMPLE} example (built-in default)")


def baseline() -> Baseline:
    if _KEY not in st.session_state:
        st.session_state[_KEY] = default_baseline()
    return st.session_state[_KEY]


def set_baseline(text: str, source: str, base_dir: str | None = None) -> Scenario:
    """Validate and adopt a scenario; raises CapsimError (and keeps the old one) when invalid, or when it
    refers to a file neither uploaded in this session nor shipped with capsim."""
    base_dir = base_dir or str(DEFAULT_SCENARIO.parent)
    uploads.check_files(read_yaml(text, source), base_dir, upload_dir().path, source)
    scenario = scenario_from_yaml_text(text, base_dir, source)
    st.session_state[_KEY] = Baseline(dump_scenario(scenario), base_dir, source)
    return scenario


def upload_dir() -> uploads.UploadDir:
    """The browser session's private upload directory, made on first use; it goes when its state goes."""
    if _UPLOADS not in st.session_state:
        st.session_state[_UPLOADS] = uploads.UploadDir()
    return st.session_state[_UPLOADS]


def stored_trace(data: bytes, name: str, column: str) -> Path:
    """Store an uploaded trace and check it reads as arrival times; TraceError names the upload."""
    from sim.workload.arrivals import read_trace

    path = upload_dir().store(data, ".parquet" if name.lower().endswith((".parquet", ".pq")) else ".csv", name)
    try:
        read_trace(path, column)
    except TraceError as exc:
        raise TraceError(str(exc).replace(str(path), name)) from None
    return path


def trace_columns(data: bytes, name: str) -> list[str]:
    import io

    import pandas as pd

    uploads.check_size(len(data), name)
    try:
        if name.lower().endswith((".parquet", ".pq")):
            return [str(c) for c in pd.read_parquet(io.BytesIO(data)).columns]
        return [str(c) for c in pd.read_csv(io.BytesIO(data), nrows=5).columns]
    except Exception as exc:  # noqa: BLE001 - any reader failure is the user's file
        raise TraceError(f"{name}: cannot read as a table: {exc}") from None


def stored_profile(data: bytes, name: str) -> Path:
    """Validate an uploaded profile JSON and store it; ProfileError names the upload."""
    from sim.profiles.profile import profile_from_bytes

    uploads.check_size(len(data), name)
    profile_from_bytes(data, name)  # the reader's own checks: bad JSON, huge integers, deep nesting, every section
    return upload_dir().store(data, ".json", name)


# ---------------------------------------------------------------- the sidebar loader
def scenario_sidebar() -> None:
    """Upload / edit / reset the baseline scenario (every page shows it first in the sidebar)."""
    with st.sidebar.expander("Scenario", expanded=False):
        upload = st.file_uploader("Upload a scenario YAML", type=["yaml", "yml"], key="scenario_upload",
                                  max_upload_size=uploads.MAX_UPLOAD_MB)
        if upload is not None and st.session_state.get("scenario_upload_id") != upload.file_id:
            st.session_state["scenario_upload_id"] = upload.file_id
            st.session_state.pop("scenario_error", None)
            try:
                uploads.check_size(upload.size, upload.name)
                set_baseline(upload.getvalue().decode("utf-8", errors="replace"), f"uploaded {upload.name}")
            except CapsimError as exc:
                st.session_state["scenario_error"] = str(exc)
        with st.form("scenario_yaml_form", border=False):
            text = st.text_area("Or edit the baseline as YAML", value=baseline().yaml_text, height=220,
                                key="scenario_yaml_" + hashlib.sha1(baseline().yaml_text.encode()).hexdigest()[:10])
            if st.form_submit_button("Apply YAML"):
                st.session_state.pop("scenario_error", None)
                try:
                    set_baseline(text, "edited in the dashboard", baseline().base_dir)
                except CapsimError as exc:
                    st.session_state["scenario_error"] = str(exc)
        if st.button("Reset to the built-in default"):
            st.session_state[_KEY] = default_baseline()
            st.session_state.pop("scenario_error", None)


def page_start(title: str, offline_ok: bool = False) -> Scenario:
    """Title, the scenario loader in the sidebar and the line naming the loaded scenario; returns it. A page
    about traffic stops here, with a note, when the loaded scenario is an offline job (it has none)."""
    st.title(title)
    scenario_sidebar()
    scenario = baseline().scenario
    scenario_caption(scenario)
    if scenario.offline is not None and not offline_ok:
        st.info(f"**{scenario.name}** is an offline batch job: it has no traffic for this page. The **Offline and "
                "streaming** page simulates it; the Scenario box in the sidebar loads another scenario.")
        st.stop()
    return scenario


def scenario_caption(scenario: Scenario | None = None) -> None:
    """One line naming the loaded scenario and where it came from."""
    b = baseline()
    name = scenario.name if scenario is not None else b.scenario.name
    st.caption(f"Scenario **{name}** — from {b.source}")
    if st.session_state.get("scenario_error"):
        st.error(f"Scenario not loaded (the previous one is kept): {st.session_state['scenario_error']}")
