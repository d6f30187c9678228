"""Autoscaling: a spike or a diurnal cycle on a static fleet and on an autoscaled one.

Built to degrade: without the ``autoscaler`` scenario section (older simulator) it shows the
traffic what-if on a static fleet only, with a note.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, compute, fmt, state, whatif
from dashboard.views.common import run_view, unstable_warning
from sim.errors import CapsimError
from sim.scenario.keys import updated
from sim.scenario.model import Scenario, mean_rate_rps

METRICS = {  # HPA metric -> (spec without target, target key, label, unit scale, default)
    "gpu_utilization": ({"type": "resource", "name": "gpu_utilization"}, "target_utilization",
                        "Target GPU utilisation (%)", 100.0, 0.6),
    "requests_per_second": ({"type": "pods", "name": "requests_per_second"}, "target_average_value",
                            "Target load per replica (req/s)", 1.0, 10000.0),
    "in_flight": ({"type": "pods", "name": "in_flight"}, "target_average_value",
                  "Target in-flight requests per replica (requests)", 1.0, 16.0),
}


def has_autoscaling() -> bool:
    return "autoscaler" in Scenario.model_fields and "cold_start" in Scenario.model_fields


def render() -> None:
    base = state.page_start("Autoscaling")
    sid = whatif.scenario_key(base)
    with st.sidebar:
        traffic = _traffic_inputs(base, sid)
    if not has_autoscaling():
        st.info("This simulator has no autoscaler yet: the spike and diurnal what-ifs run on a static fleet. "
                "Replica and cost timelines over time appear here once the `autoscaler:` section exists.")
    with st.sidebar:
        replicas = int(st.number_input("Static fleet (replicas)", 1, 10_000, base.fleet.replicas, key=f"{sid}:as_n"))
        scaled = _autoscaler_inputs(base, sid) if has_autoscaling() else None
    try:
        static = updated(base, {**traffic, "fleet.replicas": replicas, **_static()})
        auto = updated(base, {**traffic, **scaled}) if scaled is not None else None
    except CapsimError as exc:
        st.error(str(exc))
        return
    seed = base.run.seed
    views = {"static": run_view(static, seed, "Static fleet")}
    if auto is not None:
        views["autoscaled"] = run_view(auto, seed, "Autoscaled fleet")
    views = {k: v for k, v in views.items() if v is not None}
    if not views:
        return
    _summary(views, static)
    _timelines(views, static)


def _static() -> dict[str, Any]:
    return {"autoscaler": {"type": "static"}} if has_autoscaling() else {}


def _traffic_inputs(base: Scenario, sid: str) -> dict[str, Any]:
    st.markdown("**Traffic**")
    shape = st.radio("Shape", ["spike", "diurnal"], horizontal=True, key=f"{sid}:as_shape")
    rate0 = mean_rate_rps(base.workload.arrivals)
    rate0 = getattr(base.workload.arrivals, "base_rps", None) or (rate0 if math.isfinite(rate0) else 1000.0)
    rate = st.number_input("Base rate (req/s)" if shape == "spike" else "Mean rate (req/s)", 0.1, 1e7,
                           float(rate0), format="%.1f", key=f"{sid}:as_rate")
    duration = st.number_input("Simulated time (s)", 5.0, 86_400.0, float(max(base.run.duration_s or 40.0, 40.0)),
                               key=f"{sid}:as_duration")
    if shape == "spike":
        factor = st.number_input("Spike height (× base rate)", 1.0, 100.0, 4.0, 0.5, key=f"{sid}:as_factor")
        arrivals = whatif.arrivals_for("spike", rate, duration, spike_factor=factor)
        st.caption(f"{fmt.rps(rate * factor)} from {arrivals['start_s']:,.0f} s for {arrivals['duration_s']:,.0f} s "
                   f"with {arrivals['ramp_s']:,.0f} s ramps.")
    else:
        amp = st.slider("Amplitude (share of the mean, %)", 0, 100, 80, key=f"{sid}:as_amp") / 100
        arrivals = whatif.arrivals_for("diurnal", rate, duration, amplitude=amp)
        st.caption(f"One cycle over the run: {fmt.rps(rate * (1 - amp))} to {fmt.rps(rate * (1 + amp))}.")
    warmup = min(base.run.warmup_s, 0.1 * duration)
    return {"workload.arrivals": arrivals, "run.duration_s": duration, "run.warmup_s": warmup}


def _autoscaler_inputs(base: Scenario, sid: str) -> dict[str, Any]:
    st.markdown("**Autoscaler (HPA)**")
    loaded = base.autoscaler.model_dump(mode="json") if base.autoscaler.type == "hpa" else {}
    c1, c2 = st.columns(2)
    lo = int(c1.number_input("Min replicas", 1, 10_000, int(loaded.get("min_replicas", 1)), key=f"{sid}:as_min"))
    hi = int(c2.number_input("Max replicas", 1, 10_000, int(loaded.get("max_replicas", 8)), key=f"{sid}:as_max"))
    metric = st.selectbox("Metric", list(METRICS), format_func=lambda m: m.replace("_", " "), key=f"{sid}:as_metric")
    spec, target_key, label, scale, default = METRICS[metric]
    target = st.number_input(label, 0.01, 1e7, default * scale, key=f"{sid}:as_target:{metric}") / scale
    sync = st.number_input("Sync period (s)", 0.1, 600.0, float(loaded.get("sync_period_s", 2.0)), key=f"{sid}:as_sync")
    window = st.number_input("Metric window (s)", 0.1, 600.0, float(loaded.get("metric_window_s", 3.0)),
                             key=f"{sid}:as_window")
    tol = st.number_input("Tolerance (%)", 0.0, 100.0, float(loaded.get("tolerance", 0.1)) * 100, key=f"{sid}:as_tol")
    down = st.number_input("Scale-down stabilisation (s)", 0.0, 3600.0, 30.0, key=f"{sid}:as_down")
    st.markdown("**Cold start of a new replica**")
    # The loaded scenario's cold start when it autoscales already; else short phases fit for a short run.
    cs = base.cold_start.model_dump(mode="json") if base.autoscaler.type != "static" else {}

    def phase(name: str, label: str, default: float) -> float:
        value = cs.get(name)
        value = value.get("mean_s") if isinstance(value, dict) else value
        return st.number_input(label, 0.0, 3600.0, float(default if value is None else value), key=f"{sid}:as_{name}")

    cold = {"provision_s": phase("provision_s", "Provision (s)", 1.0),
            "image_pull_s": phase("image_pull_s", "Image pull (s)", 2.0),
            "weight_load_s": phase("weight_load_s", "Weight load (s)", 2.0),
            "warmup_s": phase("warmup_s", "Warm-up (s)", 1.0),
            "readiness_period_s": max(phase("readiness_period_s", "Readiness probe period (s)", 1.0), 0.01)}
    st.caption(f"A new replica takes traffic about {sum(v for k, v in cold.items() if k != 'readiness_period_s'):,.1f} s "
               "after the HPA decides, plus up to one probe period.")
    return {"autoscaler": {"type": "hpa", "min_replicas": lo, "max_replicas": hi, "sync_period_s": sync,
                           "metric_window_s": window, "tolerance": tol / 100,
                           "metrics": [{**spec, target_key: target}],
                           "behavior": {"scale_down": {"stabilization_window_s": down}}},
            "fleet.replicas": lo, "cold_start": cold}


def summary_table(views: dict) -> pd.DataFrame:
    rows = []
    keys = (("latency_p50_s", "latency p50", fmt.ms), ("latency_p99_s", "latency p99", fmt.ms),
            ("goodput_share", "within SLO", fmt.pct),
            ("requests_dropped", "dropped (rejected + timed out)", lambda x: fmt.count(x, "requests")),
            ("replicas_mean", "replicas (mean)", lambda x: fmt.count(x, "replicas")),
            ("gpu_hours", "GPU-hours billed", lambda x: f"{x:,.4f} h" if compute.finite(x) else fmt.DASH),
            ("cost_per_hour_usd", "cost per hour", lambda x: fmt.usd(x, "/h")),
            ("cost_per_million_requests_usd", "cost per 1M requests", lambda x: fmt.usd(x, " /1M req")))
    for key, label, f in keys:
        row = {"metric": label}
        for name, view in views.items():
            s = dict(view.summary)
            s["requests_dropped"] = (s.get("requests_rejected") or 0) + (s.get("requests_timed_out") or 0)
            row[f"{name} fleet"] = f(s.get(key))
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


def _summary(views: dict, scenario: Scenario) -> None:
    for name, view in views.items():
        unstable_warning(view.summary, f"The {name} fleet")
    left, right = st.columns([3, 2])
    left.table(summary_table(views))
    right.markdown(f"Same traffic (seed {scenario.run.seed}) on both fleets. SLO: p{scenario.slo.percentile:g} ≤ "
                   f"{fmt.ms(scenario.slo.latency_s)}. Price {fmt.usd(scenario.cost.usd_per_replica_hour, '/h')} "
                   "per replica; a loading replica is billed.")


def _timelines(views: dict, scenario: Scenario) -> None:
    windows = {k: v.windows for k, v in views.items()}
    series = {k: v.series for k, v in views.items()}
    price = scenario.cost.usd_per_replica_hour
    for frame in series.values():
        if "cost_rate_usd_per_h" not in frame and "ready_replicas" in frame:
            frame["cost_rate_usd_per_h"] = frame["ready_replicas"] * price
    c1, c2 = st.columns(2)
    c1.altair_chart(charts.series(windows, "arrival_rate_rps", "arrival rate (req/s)"), width="stretch")
    c2.altair_chart(charts.series(windows, "latency_p99_s", "latency p99 (ms)", scale=1e3), width="stretch")
    c3, c4 = st.columns(2)
    c3.altair_chart(_replicas(series), width="stretch")
    c4.altair_chart(charts.series(series, "cost_rate_usd_per_h", "cost rate ($/h)", step=True),
                    width="stretch")
    st.caption("Replicas: ready = taking traffic; desired = what the autoscaler asked for; loading = started, not "
               "ready yet (cold start). Cost rate counts every billed replica, loading ones included.")


def _replicas(series: dict) -> Any:
    parts = []
    for name, frame in series.items():
        for col in ("ready_replicas", "desired_replicas", "loading_replicas"):
            if col in frame and (name == "autoscaled" or col == "ready_replicas"):
                parts.append(pd.DataFrame({"time_s": frame["time_s"], col: frame[col]}).rename(
                    columns={col: "value"}).assign(run=f"{col.split('_')[0]} ({name})"))
    data = {"replicas": pd.concat(parts, ignore_index=True)} if parts else {}
    frames = {run: g for run, g in data["replicas"].groupby("run")} if data else {}
    return charts.series(frames, "value", "replicas (replicas)", step=True, legend_columns=2)
