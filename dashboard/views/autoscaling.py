"""Autoscaling: a spike or a diurnal cycle on a static fleet and on an HPA-scaled one.

The page starts from the loaded scenario when it autoscales. Otherwise it starts from the shipped
``autoscaling/spike_cold_start`` example: a spike that overwhelms a static fleet of three replicas, while a
new replica needs about 50 s (provisioning, a 40 s weight load, a readiness probe) before it takes traffic,
so the autoscaled fleet lags the spike by its cold start. *Start from* in the sidebar switches between
the two. Traffic defaults come from the starting scenario: its own spike (timing stretched with the run),
else a spike to 1.5× the static fleet's capacity.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, compute, fmt, state, whatif
from dashboard.views.common import llm_note, run_view, unstable_warning
from sim.errors import CapsimError
from sim.scenario.examples import list_examples
from sim.scenario.keys import updated
from sim.scenario.load import dump_scenario, load_scenario
from sim.scenario.model import Scenario, mean_rate_rps

EXAMPLE = "autoscaling/spike_cold_start"
METRICS = {  # HPA metric -> (spec without target, target key, label, unit scale)
    "gpu_utilization": ({"type": "resource", "name": "gpu_utilization"}, "target_utilization",
                        "Target GPU utilisation (%)", 100.0),
    "requests_per_second": ({"type": "pods", "name": "requests_per_second"}, "target_average_value",
                            "Target load per replica (req/s)", 1.0),
    "in_flight": ({"type": "pods", "name": "in_flight"}, "target_average_value",
                  "Target in-flight requests per replica (requests)", 1.0),
}
COLD_PHASES = ("provision_s", "image_pull_s", "weight_load_s", "warmup_s")


def render() -> None:
    loaded = state.page_start("Autoscaling")
    if llm_note(loaded, "its fleet's autoscaling shows on the LLM page's timelines (running and waiting sequences, "
                "KV cache); this page starts from the request-level spike example"):
        loaded = load_scenario(list_examples()[EXAMPLE])
    with st.sidebar:
        base = _starting_point(loaded)
    if base is not loaded:
        st.caption(f"This page starts from the shipped **{EXAMPLE}** example, since {loaded.name} has a static "
                   "fleet; *Start from* in the sidebar picks the loaded scenario instead.")
    sid = whatif.scenario_key(base)
    per_replica = _replica_capacity(base)
    with st.sidebar:
        traffic = _traffic_inputs(base, sid, per_replica)
        replicas = int(st.number_input("Static fleet (replicas)", 1, 10_000, base.fleet.replicas, key=f"{sid}:as_n"))
        st.caption(f"Capacity of the static fleet: about {fmt.rps(replicas * per_replica)}.")
        scaled = _autoscaler_inputs(base, sid, per_replica)
    try:
        static = updated(base, {**traffic, "fleet.replicas": replicas, "autoscaler": {"type": "static"}})
        auto = updated(base, {**traffic, **scaled})
    except CapsimError as exc:
        st.error(str(exc))
        return
    seed = base.run.seed
    views = {"static": run_view(static, seed, "Static fleet"), "autoscaled": run_view(auto, seed, "Autoscaled fleet")}
    views = {k: v for k, v in views.items() if v is not None}
    if not views:
        return
    _summary(views, static, auto)
    _timelines(views)


def _starting_point(loaded: Scenario) -> Scenario:
    """The loaded scenario, or the shipped example where the loaded one has a static fleet."""
    labels = {"loaded": f"the loaded scenario ({loaded.name})", "example": "the spike with 40 s cold starts (example)"}
    choice = st.radio("Start from", list(labels), index=0 if loaded.autoscaler.type != "static" else 1,
                      format_func=labels.__getitem__, key=f"{whatif.scenario_key(loaded)}:as_start")
    return loaded if choice == "loaded" else load_scenario(list_examples()[EXAMPLE])


def _replica_capacity(scenario: Scenario) -> float:
    """Most requests/s one replica serves, NaN when the service cannot be built (the runs then say why)."""
    try:
        return compute.replica_capacity_rps(dump_scenario(scenario), scenario.base_dir)
    except CapsimError:
        return math.nan


def _traffic_inputs(base: Scenario, sid: str, per_replica: float) -> dict[str, Any]:
    st.markdown("**Traffic**")
    a = base.workload.arrivals
    shapes = ["spike", "diurnal"]
    shape = st.radio("Shape", shapes, index=shapes.index(a.process) if a.process in shapes else 0, horizontal=True,
                     key=f"{sid}:as_shape")
    rate0 = a.base_rps if a.process == "spike" else mean_rate_rps(a)
    rate0 = rate0 if math.isfinite(rate0) else 1000.0
    rate = st.number_input("Base rate (req/s)" if shape == "spike" else "Mean rate (req/s)", 0.1, 1e7,
                           float(rate0), format="%.1f", key=f"{sid}:as_rate")
    duration0 = float(max(base.run.duration_s or 40.0, 40.0))
    duration = st.number_input("Simulated time (s)", 5.0, 86_400.0, duration0, key=f"{sid}:as_duration")
    run = {"run.duration_s": duration, "run.warmup_s": min(base.run.warmup_s, 0.1 * duration), "run.requests": None}
    loaded = a.model_dump(mode="json")
    stretch = duration / base.run.duration_s if base.run.duration_s else 1.0
    if shape == "spike":
        factor = st.number_input("Spike height (× base rate)", 1.0, 100.0, _spike_factor0(base, run, rate0, per_replica),
                                 0.5, key=f"{sid}:as_factor")
        arrivals = whatif.keep_timing(loaded, whatif.arrivals_for("spike", rate, duration, spike_factor=factor), stretch)
        st.caption(f"{fmt.rps(rate * factor)} from {arrivals['start_s']:,.0f} s for {arrivals['duration_s']:,.0f} s "
                   f"with {arrivals['ramp_s']:,.0f} s ramps.")
    else:
        amp0 = a.amplitude if a.process == "diurnal" else 0.8
        amp = st.slider("Amplitude (share of the mean, %)", 0, 100, int(round(amp0 * 100)), key=f"{sid}:as_amp") / 100
        arrivals = whatif.keep_timing(loaded, whatif.arrivals_for("diurnal", rate, duration, amplitude=amp), stretch)
        st.caption(f"{fmt.rps(rate * (1 - amp))} to {fmt.rps(rate * (1 + amp))}, peak at "
                   f"{arrivals['peak_at_s']:,.0f} s.")
    return {"workload.arrivals": arrivals, **run}


def _spike_factor0(base: Scenario, run: dict[str, Any], rate0: float, per_replica: float) -> float:
    """The scenario's own spike height, else one taking the traffic past the static fleet's capacity."""
    a = base.workload.arrivals
    if a.process == "spike":
        return float(a.spike_rps / a.base_rps)
    if not math.isfinite(per_replica):
        return 4.0
    return whatif.default_spike_factor(updated(base, run), rate0, base.fleet.replicas * per_replica)


def _autoscaler_inputs(base: Scenario, sid: str, per_replica: float) -> dict[str, Any]:
    st.markdown("**Autoscaler (HPA)**")
    loaded = base.autoscaler.model_dump(mode="json") if base.autoscaler.type == "hpa" else {}
    c1, c2 = st.columns(2)
    lo = int(c1.number_input("Min replicas", 1, 10_000, int(loaded.get("min_replicas", 1)), key=f"{sid}:as_min"))
    hi = int(c2.number_input("Max replicas", 1, 10_000, int(loaded.get("max_replicas", 8)), key=f"{sid}:as_max"))
    metric0 = next((m for m in loaded.get("metrics", []) if m["name"] in METRICS), {"name": "gpu_utilization"})
    metric = st.selectbox("Metric", list(METRICS), index=list(METRICS).index(metric0["name"]),
                          format_func=lambda m: m.replace("_", " "), key=f"{sid}:as_metric")
    spec, target_key, label, scale = METRICS[metric]
    target0 = metric0.get(target_key) if metric == metric0["name"] else None
    target0 = target0 or _default_target(metric, per_replica)
    target = st.number_input(label, 0.01, 1e7, float(target0 * scale), key=f"{sid}:as_target:{metric}") / scale
    sync = st.number_input("Sync period (s)", 0.1, 600.0, float(loaded.get("sync_period_s", 2.0)), key=f"{sid}:as_sync")
    window = st.number_input("Metric window (s)", 0.1, 600.0, float(loaded.get("metric_window_s", 3.0)),
                             key=f"{sid}:as_window")
    tol = st.number_input("Tolerance (%)", 0.0, 100.0, float(loaded.get("tolerance", 0.1)) * 100, key=f"{sid}:as_tol")
    behavior = loaded.get("behavior") or {}
    down0 = (behavior.get("scale_down") or {}).get("stabilization_window_s", 30.0)
    down = st.number_input("Scale-down stabilisation (s)", 0.0, 3600.0, float(down0), key=f"{sid}:as_down")
    cold = _cold_start_inputs(base, sid)
    hpa = {**loaded, "type": "hpa", "min_replicas": lo, "max_replicas": hi, "sync_period_s": sync,
           "metric_window_s": window, "tolerance": tol / 100, "metrics": [{**spec, target_key: target}],
           "behavior": {**behavior, "scale_down": {**(behavior.get("scale_down") or {}),
                                                    "stabilization_window_s": down}}}
    return {"autoscaler": hpa, "fleet.replicas": lo, "cold_start": cold}


def _default_target(metric: str, per_replica: float) -> float:
    if metric == "requests_per_second":  # 60 % of what a replica serves at most
        return round(0.6 * per_replica) if math.isfinite(per_replica) and per_replica >= 2 else 100.0
    return {"gpu_utilization": 0.6, "in_flight": 16.0}[metric]


def _cold_start_inputs(base: Scenario, sid: str) -> dict[str, Any]:
    st.markdown("**Cold start of a new replica**")
    # The scenario's cold start when it autoscales already; else short phases fit for a short run.
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
    st.caption(f"A new replica takes traffic about {_cold_start_s(cold):,.1f} s after the HPA decides, plus up to "
               "one probe period.")
    return {**cs, **cold}


def _cold_start_s(cold: dict[str, Any]) -> float:
    return sum(cold[k] for k in COLD_PHASES)


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


def _summary(views: dict, static: Scenario, auto: Scenario) -> None:
    for name, view in views.items():
        unstable_warning(view.summary, f"The {name} fleet")
    left, right = st.columns([3, 2])
    left.table(summary_table(views))
    capacity = views["static"].summary.get("capacity_rps") if "static" in views else None
    peak = views["static" if "static" in views else "autoscaled"].windows["arrival_rate_rps"].max()
    cold = auto.cold_start.model_dump(mode="json")
    right.markdown(
        f"Same traffic (seed {static.run.seed}) on both fleets, peaking near {fmt.rps(peak)}; the static fleet of "
        f"{static.fleet.replicas} serves at most {fmt.rps(capacity)}. A replica the autoscaler adds takes traffic "
        f"about {_cold_start_s({k: _mean(cold[k]) for k in COLD_PHASES}):,.0f} s after it is asked for "
        f"(plus up to one {cold['readiness_period_s']:g} s probe period).\n\n"
        f"SLO: p{static.slo.percentile:g} ≤ {fmt.ms(static.slo.latency_s)}. Price "
        f"{fmt.usd(static.cost.usd_per_replica_hour, '/h')} per replica; a loading replica is billed.")


def _mean(phase: Any) -> float:
    return phase.get("mean_s", 0.0) if isinstance(phase, dict) else phase


def _timelines(views: dict) -> None:
    windows = {k: v.windows for k, v in views.items()}
    series = {k: v.series for k, v in views.items()}
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
    shown = {"static": ("ready_replicas",), "autoscaled": ("ready_replicas", "desired_replicas", "loading_replicas")}
    frames = {f"{col.split('_')[0]} ({name})": pd.DataFrame({"time_s": frame["time_s"], "value": frame[col]})
              for name, frame in series.items() for col in shown[name]}
    return charts.series(frames, "value", "replicas (replicas)", step=True, legend_columns=2)
