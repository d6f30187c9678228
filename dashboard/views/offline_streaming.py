"""Offline and streaming: a batch job against its deadline, and a stream's consumer lag, each beside its
closed form (``dashboard/architectures.py`` holds the logic and the cached runs).

Each tab starts from the loaded scenario when it is of that architecture, else from the shipped example
(``architectures/offline_rescoring``, ``architectures/streaming_iot``).
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import architectures as arch
from dashboard import charts, fmt, state, whatif
from sim.errors import CapsimError
from sim.scenario.keys import updated
from sim.scenario.load import dump_scenario, load_scenario
from sim.scenario.model import Scenario

BATCH_SIZES = (16, 32, 64, 128, 256)


def render() -> None:
    loaded = state.page_start("Offline and streaming", offline_ok=True)
    offline, streaming = st.tabs(["Offline batch job", "Streaming"])
    with offline:
        _offline(_start(loaded, "offline"))
    with streaming:
        _streaming(_start(loaded, "streaming"))


def _start(loaded: Scenario, mode: str) -> Scenario:
    if getattr(loaded, mode) is not None:
        return loaded
    st.caption(f"Starting from the shipped **{arch.EXAMPLES[mode]}** example (the loaded scenario has no {mode} "
               "section).")
    return load_scenario(arch.EXAMPLES[mode])


def _run(label: str, fn, *args):
    """A cached computation, or None after showing why it could not run (never a traceback)."""
    try:
        return fn(*args)
    except CapsimError as exc:
        st.error(f"{label}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a page shows the message, never a traceback
        st.error(f"{label}: the simulation failed: {type(exc).__name__}: {exc}")
    return None


# ---------------------------------------------------------------- offline
def _offline(base: Scenario) -> None:
    sid, off = whatif.scenario_key(base), base.offline
    c = st.columns(4)
    items = int(c[0].number_input("Items", 1, 50_000_000, off.job_items, step=100_000, key=f"{sid}:off_items"))
    deadline = c[1].number_input("Deadline (s)", 1.0, 7 * 86_400.0, off.deadline_s, key=f"{sid}:off_deadline")
    replicas = int(c[2].number_input("Replicas", 1, 1000, base.fleet.replicas, key=f"{sid}:off_replicas"))
    sizes = sorted({*BATCH_SIZES, base.batching.max_batch_size})
    batch = c[3].selectbox("Batch size (items)", sizes, sizes.index(base.batching.max_batch_size), key=f"{sid}:off_b")
    c = st.columns(3)
    kind = c[0].radio("Capacity", ["on_demand", "spot"], ["on_demand", "spot"].index(off.capacity_type),
                      format_func=lambda k: k.replace("_", "-"), horizontal=True, key=f"{sid}:off_kind")
    discount = c[1].number_input("Spot discount (%)", 0.0, 99.0, off.spot_discount * 100, key=f"{sid}:off_disc") / 100
    reclaims = c[2].number_input("Spot reclaims (per replica-hour)", 0.0, 100.0, off.spot_interruptions_per_hour,
                                 format="%.3f", key=f"{sid}:off_reclaims")
    inputs = arch.OfflineInputs(items, deadline, replicas, int(batch), kind, discount, reclaims)
    try:
        scenario = updated(base, arch.offline_updates(inputs))
        formula = arch.offline_formula(scenario)
    except CapsimError as exc:
        st.error(str(exc))
        return
    text = dump_scenario(scenario)
    ran = _run("Offline job", arch.offline_job, text, scenario.base_dir, scenario.run.seed)
    if ran is None:
        return
    summary, series = ran
    _offline_numbers(summary, formula, scenario)
    left, right = st.columns(2)
    left.altair_chart(_progress(series, deadline), width="stretch")
    frames = {name: pd.DataFrame({"time_s": series["time_s"], "value": series[col]})
              for name, col in (("billed", "billed_replicas"), ("busy", "busy_replicas"))}
    right.altair_chart(charts.series(frames, "value", "replicas (replicas)", step=True), width="stretch")
    st.altair_chart(charts.series({"utilisation": series}, "utilization", "utilisation (%)", scale=100), width="stretch")
    fleets = _run("Other fleets", arch.offline_fleets, text, scenario.base_dir, scenario.run.seed,
                  arch.fleet_counts(replicas))
    if fleets is not None:
        _fleet_table(fleets)


def _offline_numbers(summary: dict, formula: dict, scenario: Scenario) -> None:
    met = summary.get("deadline_met")
    cols = st.columns(5)
    cols[0].metric("Makespan", _seconds(summary.get("makespan_s")), help="From submission to the last item done.")
    cols[1].metric("Deadline", "met" if met else "missed", delta=_seconds(summary.get("deadline_slack_s")) + " slack",
                   delta_color="normal" if met else "inverse")
    cols[2].metric("Cost of the job", fmt.usd(summary.get("cost_usd")))
    cols[3].metric("GPU-hours", f"{summary.get('gpu_hours', float('nan')):,.3f} h")
    cols[4].metric("Utilisation", fmt.pct(summary.get("utilization"), 1), help="Busy share of the billed time, "
                   "cold starts included.")
    st.markdown(
        f"Hand formula: cold start {_seconds(formula['cold_start_s'])} + ⌈N/(K·B)⌉ = {formula['rounds']:,} rounds × "
        f"{fmt.ms(formula['batch_s'])} per batch = **{_seconds(formula['makespan_s'])}** (simulated "
        f"{_seconds(summary.get('makespan_s'))}: the last round's partial batch and service-time variability move it "
        f"by up to one batch). Price {fmt.usd(formula['price_usd_per_replica_hour'], '/h')} per replica"
        + (f"; {summary.get('interruptions', 0):,.0f} spot reclaims, {summary.get('items_redone', 0):,.0f} items "
           "done again." if scenario.offline.capacity_type == "spot" else "."))


def _seconds(x) -> str:
    return f"{x:,.1f} s" if isinstance(x, (int, float)) and x == x else fmt.DASH


def _progress(series: pd.DataFrame, deadline_s: float) -> alt.Chart:
    line = charts.series({"items done": series}, "items_done", "items done (items)")
    rule = alt.Chart(pd.DataFrame({"deadline_s": [deadline_s]})).mark_rule(strokeDash=[4, 3], color="#444").encode(
        x="deadline_s:Q", tooltip=[alt.Tooltip("deadline_s:Q", title="deadline (s)")])
    return line + rule


def _fleet_table(fleets: pd.DataFrame) -> None:
    st.markdown("**The same job on other fleets** (one replication each, the same seed)")
    out = pd.DataFrame({
        "replicas": fleets["replicas"],
        "makespan": fleets["makespan_s"].map(_seconds),
        "deadline": fleets["deadline_met"].map(lambda m: "met" if m else "missed"),
        "cost": fleets["cost_usd"].map(fmt.usd),
        "GPU-hours": fleets["gpu_hours"].map(lambda h: f"{h:,.3f} h" if h == h else fmt.DASH),
    })
    st.dataframe(out, hide_index=True, width="stretch")


# ---------------------------------------------------------------- streaming
def _streaming(base: Scenario) -> None:
    sid, st_spec = whatif.scenario_key(base), base.streaming
    theory0 = arch.stream_theory(base)
    c = st.columns(4)
    rate = c[0].number_input("Mean event rate (events/s)", 1.0, 1e6, float(round(theory0["rate_per_s"])),
                             key=f"{sid}:st_rate")
    duration = c[1].number_input("Simulated time (s)", 10.0, 86_400.0, float(min(base.run.duration_s or 300.0, 300.0)),
                                 key=f"{sid}:st_duration")
    partitions = int(c[2].number_input("Partitions (0 = one shared queue)", 0, 10_000, st_spec.partitions or 0,
                                       key=f"{sid}:st_partitions"))
    capacity = int(c[3].number_input("Events per partition (0 = unbounded)", 0, 10**9,
                                     st_spec.partition_capacity_events, key=f"{sid}:st_capacity"))
    c = st.columns(4)
    backpressure = c[0].radio("At a full partition", ["block", "drop"], ["block", "drop"].index(st_spec.backpressure),
                              horizontal=True, key=f"{sid}:st_bp")
    interval = c[1].number_input("Checkpoint every (s, 0 = never)", 0.0, 86_400.0,
                                 float(st_spec.checkpoint_interval_s or 0.0), key=f"{sid}:st_ckpt")
    pause = c[2].number_input("Checkpoint pause (s)", 0.0, 3600.0, float(st_spec.checkpoint_pause_s),
                              key=f"{sid}:st_pause")
    consumers = int(c[3].number_input("Consumers (replicas)", 1, 10_000, base.fleet.replicas, key=f"{sid}:st_consumers"))
    auto = base.autoscaler if base.autoscaler.type == "keda" else None
    keda = st.toggle("Scale consumers with KEDA on lag", auto is not None, key=f"{sid}:st_keda")
    threshold, most = (auto.lag_threshold, auto.max_replicas) if auto else (1000, 4 * consumers)
    if keda:
        c = st.columns(2)
        threshold = int(c[0].number_input("Lag threshold (events per consumer)", 1, 10**9, threshold,
                                          key=f"{sid}:st_lag"))
        most = int(c[1].number_input("Max consumers", 1, 10_000, most, key=f"{sid}:st_max"))
    inputs = arch.StreamInputs(rate, duration, partitions, capacity, backpressure, consumers, keda, threshold, most,
                               interval, pause)
    try:
        scenario = updated(base, arch.stream_updates(base, inputs))
        theory = arch.stream_theory(scenario)
    except CapsimError as exc:
        st.error(str(exc))
        return
    ran = _run("Stream", arch.stream_run, dump_scenario(scenario), scenario.base_dir, scenario.run.seed)
    if ran is None:
        return
    summary, series = ran
    _stream_numbers(summary, theory)
    left, right = st.columns(2)
    left.altair_chart(charts.series({"lag": series}, "lag_events", "consumer lag (events)"), width="stretch")
    frames = {name: pd.DataFrame({"time_s": series["time_s"], "value": series[col]})
              for name, col in (("ready", "ready_replicas"), ("desired", "desired_replicas"))}
    right.altair_chart(charts.series(frames, "value", "consumers (replicas)", step=True), width="stretch")
    left, right = st.columns(2)
    left.altair_chart(charts.series({"oldest uncommitted": series}, "lag_s", "consumer lag (s)"), width="stretch")
    rates = {name: pd.DataFrame({"time_s": series["time_s"], "value": series[col]})
             for name, col in (("produced", "arrival_rate_rps"), ("processed", "throughput_rps"))}
    right.altair_chart(charts.series(rates, "value", "events/s"), width="stretch")


def _stream_numbers(summary: dict, theory: dict) -> None:
    cols = st.columns(6)
    cols[0].metric("p99 latency", fmt.ms(summary.get("latency_p99_s")), help="Event produced to processed.")
    cols[1].metric("Lag (max)", fmt.compact(summary.get("lag_events_max"), "events"))
    cols[2].metric("Lag growth", f"{summary.get('lag_growth_events_per_s', float('nan')):,.1f} events/s")
    cols[3].metric("Producer stalled", _seconds(summary.get("producer_stall_s")))
    cols[4].metric("Events dropped", fmt.count(summary.get("events_dropped"), "events"))
    cols[5].metric("Cost per hour", fmt.usd(summary.get("cost_per_hour_usd"), "/h"))
    st.markdown(
        f"Offered λ = {theory['rate_per_s']:,.0f} events/s; the consumers serve at most μ = "
        f"{theory['capacity_per_s']:,.0f} events/s (one per partition at most, less checkpoint pauses), so the lag "
        f"grows at (λ − μ)⁺ = **{theory['lag_growth_per_s']:,.1f} events/s** in the long run (simulated "
        f"{summary.get('lag_growth_events_per_s', float('nan')):,.1f} over the second half). Lag counts events "
        "written and not yet committed; consumers commit every few seconds, so a healthy stream still shows a lag "
        "of about rate × half the commit interval.")
    if summary.get("unstable"):
        st.warning("**The stream is overloaded**: the lag (or, with a blocking producer, the events waiting "
                   "upstream) grows for as long as the run lasts; latency percentiles are withheld.", icon="⚠️")
