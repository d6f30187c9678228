"""The what-if inputs: widgets in, scenario updates out.

Every widget's key carries the baseline's id, so loading another scenario resets the inputs to its
values. An input left at the baseline's value adds no update, so the untouched candidate *is* the
baseline (same YAML, same cached run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from dashboard import state, uploads, whatif
from sim.errors import CapsimError
from sim.hardware.gpus import gpu_catalog
from sim.profiles.profile import list_builtin_profiles
from sim.scenario.keys import updated
from sim.scenario.model import Scenario, mean_rate_rps
from sim.serving.routers import ROUTERS
from sim.workload.arrivals import expected_count, read_trace

UPLOAD = "__upload__"
LOADED = "__loaded__"


@dataclass
class Inputs:
    updates: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seed: int = 0


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def _put(inputs: Inputs, key: str, new: Any, old: Any) -> None:
    if not _close(new, old):
        inputs.updates[key] = new


def what_if_inputs(base: Scenario, where=None) -> Inputs:
    """Render the what-if inputs (in the sidebar by default) and return the updates they make."""
    where = where or st.sidebar
    sid = whatif.scenario_key(base)
    inputs = Inputs(seed=base.run.seed)
    with where:
        with st.expander("Traffic", expanded=True):
            _traffic(base, sid, inputs)
        with st.expander("Model and GPU", expanded=False):
            _model(base, sid, inputs)
        with st.expander("Batching", expanded=False):
            _batching(base, sid, inputs)
        with st.expander("Fleet, SLO and price", expanded=True):
            _fleet(base, sid, inputs)
        with st.expander("Run", expanded=False):
            _run(base, sid, inputs)
    return inputs


# ---------------------------------------------------------------- sections
def _traffic(base: Scenario, sid: str, inputs: Inputs) -> None:
    a = base.workload.arrivals
    # Processes the inputs cannot rebuild, and a loaded trace (which has no upload here), stay as loaded.
    keep = a.process not in whatif.PATTERNS or a.process == "trace"
    options = [LOADED, *whatif.PATTERNS] if keep else list(whatif.PATTERNS)
    labels = {**whatif.PATTERN_LABELS, LOADED: f"as loaded ({a.process})"}
    current = LOADED if keep else a.process
    pattern = st.selectbox("Arrival pattern", options, index=options.index(current),
                           format_func=labels.__getitem__, key=f"{sid}:pattern")
    if pattern == LOADED:
        st.caption(f"Keeping the scenario's {a.process} arrivals.")
        return
    duration = base.run.duration_s or 60.0
    rate0 = {"spike": getattr(a, "base_rps", None)}.get(a.process) or mean_rate_rps(a)
    rate0 = rate0 if math.isfinite(rate0) else 1000.0
    if pattern != "trace":
        rate = st.number_input("Base rate (req/s)" if pattern == "spike" else "Mean arrival rate (req/s)",
                               min_value=0.1, max_value=1e7, value=float(rate0), step=float(max(1, round(rate0 / 20))),
                               format="%.1f", key=f"{sid}:rate")
    opts: dict[str, Any] = {}
    same = pattern == a.process
    if pattern == "mmpp":
        ratio0 = a.rate_on_rps / a.rate_off_rps if same and a.rate_off_rps > 0 else 4.0
        opts["burst_ratio"] = st.number_input("Burst ratio (on rate ÷ off rate, ×)", 1.0, 100.0, float(ratio0),
                                              0.5, key=f"{sid}:burst")
        opts["mean_on_s"] = st.number_input("Mean burst length (s)", 0.01, 1e5, float(a.mean_on_s if same else 5.0),
                                            key=f"{sid}:on")
        opts["mean_off_s"] = st.number_input("Mean quiet length (s)", 0.01, 1e5,
                                             float(a.mean_off_s if same else 15.0), key=f"{sid}:off")
    elif pattern == "diurnal":
        opts["amplitude"] = st.slider("Amplitude (share of the mean, %)", 0, 100,
                                      int(round((a.amplitude if same else 0.6) * 100)), key=f"{sid}:amp") / 100
    elif pattern == "spike":
        factor0 = a.spike_rps / a.base_rps if same else 3.0
        opts["spike_factor"] = st.number_input("Spike height (× base rate)", 1.0, 100.0, float(factor0), 0.5,
                                               key=f"{sid}:spike")
    elif pattern == "trace":
        _trace(base, sid, inputs)
        return
    # The same process keeps the loaded timing (period, spike start...): only what the inputs set changes.
    built = whatif.keep_timing(a.model_dump(mode="json"), whatif.arrivals_for(pattern, rate, duration, **opts))
    _put(inputs, "workload.arrivals", built, a.model_dump(mode="json"))


def _trace(base: Scenario, sid: str, inputs: Inputs) -> None:
    upload = st.file_uploader("Trace CSV (one arrival time per row, seconds)", type=["csv", "parquet"],
                              key=f"{sid}:trace_file", max_upload_size=uploads.MAX_UPLOAD_MB)
    if upload is None:
        inputs.errors.append("Upload a trace CSV to replay it (or pick another arrival pattern).")
        return
    data = upload.getvalue()
    try:
        columns = state.trace_columns(data, upload.name)
        default = columns.index("arrival_s") if "arrival_s" in columns else 0
        column = st.selectbox("Column of arrival times (s)", columns, index=default, key=f"{sid}:trace_col")
        scale = st.number_input("Time scale (× trace times; 0.5 = replay 2× faster)", 0.001, 1000.0, 1.0,
                                key=f"{sid}:trace_scale")
        path = state.stored_trace(data, upload.name, column)
    except CapsimError as exc:
        inputs.errors.append(str(exc))
        return
    times = read_trace(path, column)
    if times.size > whatif.MAX_DASHBOARD_REQUESTS:
        inputs.errors.append(f"{upload.name}: {times.size:,} arrivals; the dashboard replays at most "
                             f"{whatif.MAX_DASHBOARD_REQUESTS:,} (replay longer traces with `capsim simulate`)")
        return
    last = float(times[-1]) * scale
    duration = max(last, 1e-3) * 1.0001
    inputs.updates["workload.arrivals"] = whatif.arrivals_for("trace", 1.0, duration, trace_path=str(path),
                                                             trace_column=column, time_scale=scale)
    inputs.updates["run.duration_s"] = duration
    inputs.updates["run.warmup_s"] = min(base.run.warmup_s, 0.1 * duration)
    inputs.notes.append(f"Replaying {upload.name}: {duration:,.1f} s of arrivals.")


def _model(base: Scenario, sid: str, inputs: Inputs) -> None:
    svc = base.service
    shipped = list_builtin_profiles()
    loaded = svc.profile if svc.type == "profile" else None
    options = list(shipped)
    if svc.type == "parametric" or (loaded and loaded not in shipped):
        options.insert(0, LOADED)
    options.append(UPLOAD)
    label_loaded = f"as loaded ({loaded})" if loaded else "as loaded (parametric service time)"
    labels = {LOADED: label_loaded, UPLOAD: "upload a profile JSON…"}
    index = options.index(loaded) if loaded in shipped else 0
    choice = st.selectbox("Model profile", options, index=index, format_func=lambda o: labels.get(o, o),
                          key=f"{sid}:profile")
    profile_ref = None
    if choice == UPLOAD:
        upload = st.file_uploader("Profile JSON (capsim.profile/1)", type=["json"], key=f"{sid}:profile_file",
                                  max_upload_size=uploads.MAX_UPLOAD_MB)
        if upload is None:
            inputs.errors.append("Upload a profile JSON (or pick a shipped profile).")
        else:
            try:
                profile_ref = str(state.stored_profile(upload.getvalue(), upload.name))
            except CapsimError as exc:
                inputs.errors.append(str(exc))
    elif choice != LOADED:
        profile_ref = choice
    if profile_ref is not None and profile_ref != loaded:
        inputs.updates["service"] = {"type": "profile", "profile": profile_ref,
                                     "warmed_up": getattr(svc, "warmed_up", True)}
    if svc.type == "profile" or profile_ref is not None:
        warm = st.checkbox("Replicas warmed up (no first-call cost)", getattr(svc, "warmed_up", True),
                           key=f"{sid}:warm")
        speedup = st.number_input("Speed-up of the model (×)", 0.05, 100.0, float(getattr(svc, "speedup", 1.0)),
                                  0.1, key=f"{sid}:speedup")
        _put(inputs, "service.warmed_up", warm, getattr(svc, "warmed_up", True))
        _put(inputs, "service.speedup", speedup, getattr(svc, "speedup", 1.0))
    _gpu(base, sid, inputs)


def _gpu(base: Scenario, sid: str, inputs: Inputs) -> None:
    catalog = gpu_catalog()
    here = base.fleet.gpu
    price0 = base.cost.usd_per_replica_hour
    options = [LOADED, *catalog]
    labels = {LOADED: f"as loaded ({here or 'no GPU named'}, ${price0:,.2f}/h)",
              **{k: f"{k} (${g.usd_per_hour:,.2f}/h)" for k, g in catalog.items()}}
    gpu = st.selectbox("GPU type (sets the price)", options, format_func=labels.__getitem__, key=f"{sid}:gpu")
    default = price0 if gpu == LOADED else catalog[gpu].usd_per_hour
    price = st.number_input("Price per replica-hour ($/h)", 0.0, 1000.0, float(default), 0.01, format="%.3f",
                            key=f"{sid}:price:{gpu}")
    if gpu != LOADED:
        _put(inputs, "fleet.gpu", gpu, here)
        inputs.notes.append(f"GPU type {gpu} sets the price only; pick a profile measured or estimated on it "
                            "for its speed.")
    _put(inputs, "cost.usd_per_replica_hour", price, price0)


def _batching(base: Scenario, sid: str, inputs: Inputs) -> None:
    b = base.batching
    maxb = int(st.number_input("Max batch size (requests)", 1, 65536, b.max_batch_size, key=f"{sid}:maxb"))
    delay_ms = st.number_input("Max queue delay (ms)", 0.0, 10_000.0, b.max_queue_delay_s * 1e3, 0.5,
                               format="%.2f", key=f"{sid}:delay")
    preferred = st.text_input("Preferred batch sizes (e.g. 8, 16; empty = none)",
                              ", ".join(map(str, b.preferred_batch_sizes)), key=f"{sid}:pref")
    qlimit = int(st.number_input("Queue limit per replica (requests, 0 = unlimited)", 0, 10_000_000,
                                 b.max_queue_size, key=f"{sid}:qlim"))
    timeout_ms = st.number_input("Queue timeout (ms, 0 = none)", 0.0, 1e6, (b.timeout_s or 0.0) * 1e3, 1.0,
                                 format="%.1f", key=f"{sid}:timeout")
    _put(inputs, "batching.max_batch_size", maxb, b.max_batch_size)
    _put(inputs, "batching.max_queue_delay_s", delay_ms / 1e3, b.max_queue_delay_s)
    try:
        _put(inputs, "batching.preferred_batch_sizes", whatif.parse_sizes(preferred, maxb), b.preferred_batch_sizes)
    except CapsimError as exc:
        inputs.errors.append(str(exc))
    _put(inputs, "batching.max_queue_size", qlimit, b.max_queue_size)
    _put(inputs, "batching.timeout_s", timeout_ms / 1e3 if timeout_ms > 0 else None, b.timeout_s)


def _fleet(base: Scenario, sid: str, inputs: Inputs) -> None:
    f, slo = base.fleet, base.slo
    replicas = int(st.number_input("Replicas (GPUs)", 1, 10_000, f.replicas, key=f"{sid}:replicas"))
    router = st.selectbox("Router", list(ROUTERS), index=list(ROUTERS).index(f.router), key=f"{sid}:router",
                          format_func=lambda r: r.replace("_", " "))
    c1, c2 = st.columns(2)
    slo_ms = c1.number_input("SLO latency (ms)", 0.001, 1e6, slo.latency_s * 1e3, format="%.3g", key=f"{sid}:slo")
    pctl = c2.number_input("SLO percentile", 50.0, 99.99, float(slo.percentile), 0.5, format="%.2f", key=f"{sid}:pctl")
    _put(inputs, "fleet.replicas", replicas, f.replicas)
    _put(inputs, "fleet.router", router, f.router)
    _put(inputs, "slo.latency_s", slo_ms / 1e3, slo.latency_s)
    _put(inputs, "slo.percentile", pctl, slo.percentile)


def _run(base: Scenario, sid: str, inputs: Inputs) -> None:
    r = base.run
    if r.duration_s is not None:
        duration = st.number_input("Simulated time (s)", 0.1, 1e6, float(r.duration_s), key=f"{sid}:duration")
        _put(inputs, "run.duration_s", duration, r.duration_s)
        if r.warmup_s >= duration:
            inputs.updates["run.warmup_s"] = 0.1 * duration
    inputs.seed = int(st.number_input("Seed", 0, 2**31 - 1, r.seed, key=f"{sid}:seed"))
    try:
        sized = updated(base, {k: v for k, v in inputs.updates.items() if k.startswith(("run.", "workload."))})
        expected = expected_count(sized)
    except CapsimError:
        expected = math.nan
    if math.isfinite(expected):
        st.caption(f"About {expected:,.0f} requests per run; one replication.")
