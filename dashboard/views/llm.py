"""LLM serving: TTFT, TPOT and cost of a token-level scenario against replicas, tensor parallelism and the
scheduler's knobs; its queue and KV-cache timelines; the memory of one GPU of a replica.

The page starts from the loaded scenario when it has an ``llm`` section, else from a shipped llm example
(``llm/chat_llama3_8b`` unless another is picked in the sidebar). Computation is in ``dashboard/llm.py``
(pure) and cached in ``dashboard/compute.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, compute, fmt, llm, state, whatif
from dashboard.views.common import run_view
from sim.errors import CapsimError
from sim.hardware.gpus import gpu_catalog
from sim.scenario.keys import updated
from sim.scenario.load import dump_scenario, load_scenario
from sim.scenario.model import Scenario
from sim.serving.routers import ROUTERS

TITLE, ICON, URL = "LLM serving", ":material/forum:", "llm"  # app.py registers the page with these


def render() -> None:
    loaded = state.page_start(TITLE)
    base = _starting_point(loaded)
    sid = whatif.scenario_key(base)
    with st.sidebar:
        updates = _inputs(base, sid)
    try:
        scenario = updated(base, updates)
        llm.check_size(scenario)
    except CapsimError as exc:
        st.error(f"This configuration does not run: {str(exc).removeprefix('--set ')}")
        _memory(base, updates)
        return
    view = run_view(scenario, scenario.run.seed, "This configuration")
    if view is None:
        return
    _headline(view.summary, scenario)
    tab_grid, tab_knob, tab_time, tab_mem = st.tabs(["Replicas and TP", "Scheduler knobs", "Timelines", "Memory"])
    with tab_grid:
        _replica_grid(scenario)
    with tab_knob:
        _knob_sweep(scenario, sid)
    with tab_time:
        _timelines(view)
    with tab_mem:
        _memory(scenario, {})


def _starting_point(loaded: Scenario) -> Scenario:
    """The loaded scenario when it is an llm one; else a shipped llm example picked in the sidebar."""
    if llm.is_llm(loaded):
        return loaded
    names = llm.examples()
    name = st.sidebar.selectbox("LLM example", names, key="llm_example",
                                help="The loaded scenario serves requests, not tokens: this page starts from an "
                                     "llm example (upload or edit an llm scenario in the Scenario box to use it)")
    st.caption(f"{loaded.name} has no llm section, so this page starts from the shipped **{name}** example "
               "(pick another in the sidebar, or load an llm scenario in the Scenario box).")
    return load_scenario(name)


def _inputs(base: Scenario, sid: str) -> dict[str, Any]:
    """The sidebar's inputs as scenario updates (an input left at the scenario's value adds none)."""
    spec, updates = base.llm, {}

    def put(key: str, new, old) -> None:
        if new != old:
            updates[key] = new

    with st.expander("Traffic and SLO", expanded=True):
        rate0 = llm.mean_rate_rps(base)
        rate = st.number_input("Mean arrival rate (req/s)", 0.01, 1e6, float(round(rate0, 3)), key=f"{sid}:llm_rate")
        updates.update(llm.traffic_updates(base, rate) if abs(rate - round(rate0, 3)) > 1e-9 else {})
        duration0 = float(base.run.duration_s or 60.0)
        put("run.duration_s", st.number_input("Simulated time (s)", 5.0, 3600.0, duration0, key=f"{sid}:llm_dur"),
            duration0)
        c1, c2 = st.columns(2)
        ttft = c1.number_input(f"TTFT p{spec.slo.percentile:g} (ms)", 1.0, 1e6, spec.slo.ttft_s * 1e3,
                               key=f"{sid}:llm_ttft")
        tpot = c2.number_input(f"TPOT p{spec.slo.percentile:g} (ms)", 0.1, 1e5, spec.slo.tpot_s * 1e3,
                               key=f"{sid}:llm_tpot")
        put("llm.slo.ttft_s", ttft / 1e3, spec.slo.ttft_s)
        put("llm.slo.tpot_s", tpot / 1e3, spec.slo.tpot_s)
    with st.expander("GPUs and replicas", expanded=True):
        catalog, gpus = gpu_catalog(), llm.gpu_options(base)
        gpu = st.selectbox("GPU", gpus, index=gpus.index(base.fleet.gpu) if base.fleet.gpu in gpus else 0,
                           format_func=lambda k: f"{k} ({catalog[k].memory_bytes / 2**30:,.0f} GiB, "
                                                 f"${catalog[k].usd_per_hour:,.2f}/h)", key=f"{sid}:llm_gpu")
        put("fleet.gpu", gpu, base.fleet.gpu)
        tps = llm.tensor_parallel_options(base)
        tp = st.selectbox("Tensor parallel (GPUs per replica)", tps, index=tps.index(spec.tensor_parallel),
                          key=f"{sid}:llm_tp")
        put("llm.tensor_parallel", tp, spec.tensor_parallel)
        pools = spec.disaggregation
        if base.autoscaler.type == "static":
            split = st.toggle("Separate prefill and decode replicas", pools is not None, key=f"{sid}:llm_disagg",
                              help="Disaggregated serving: some replicas only prefill, the others only decode; each "
                                   "prompt's KV cache is copied between them (llm.disaggregation).")
            if split:
                c1, c2 = st.columns(2)
                p0, d0 = (pools.prefill_replicas, pools.decode_replicas) if pools else llm.default_pools(base)
                prefill = int(c1.number_input("Prefill replicas", 1, 1000, p0, key=f"{sid}:llm_prefill"))
                decode = int(c2.number_input("Decode replicas", 1, 1000, d0, key=f"{sid}:llm_decode"))
                put("llm.disaggregation", llm.pools_section(base, prefill, decode),
                    pools.model_dump(mode="json") if pools else None)
            else:
                if pools is not None:
                    updates["llm.disaggregation"] = None
                replicas0 = base.fleet.replicas
                put("fleet.replicas", int(st.number_input("Replicas", 1, 1000, replicas0, key=f"{sid}:llm_replicas")),
                    replicas0 if pools is None else None)
        else:
            st.caption(f"Replicas: the {base.autoscaler.type} autoscaler decides (the sweeps use static fleets).")
    with st.expander("Scheduler", expanded=False):
        seqs = int(st.number_input("max_num_seqs (sequences)", 1, 65536, spec.max_num_seqs, key=f"{sid}:llm_seqs"))
        tokens = int(st.number_input("max_num_batched_tokens (tokens)", 1, 1_048_576, spec.max_num_batched_tokens,
                                     key=f"{sid}:llm_tokens"))
        chunked = st.toggle("Chunked prefill", spec.enable_chunked_prefill, key=f"{sid}:llm_chunked")
        put("llm.max_num_seqs", seqs, spec.max_num_seqs)
        put("llm.max_num_batched_tokens", tokens, spec.max_num_batched_tokens)
        put("llm.enable_chunked_prefill", chunked, spec.enable_chunked_prefill)
        caching = st.toggle("Prefix caching", spec.enable_prefix_caching, key=f"{sid}:llm_prefix_cache",
                            help="Reuse the cached KV blocks of a shared prompt prefix (workload.shared_prefix); "
                                 "without shared prefixes it changes nothing.")
        put("llm.enable_prefix_caching", caching, spec.enable_prefix_caching)
        routers = list(ROUTERS)
        router = st.selectbox("Router", routers, index=routers.index(base.fleet.router), key=f"{sid}:llm_router",
                              help="prefix_affinity: a shared prefix's requests to the replica it hashes to; "
                                   "least_kv_cache: the replica with the least KV cache in use.")
        put("fleet.router", router, base.fleet.router)
        if base.workload.classes:
            policies = ["fcfs", "priority"]
            policy = st.selectbox("Scheduling policy", policies, index=policies.index(spec.scheduling_policy),
                                  key=f"{sid}:llm_policy",
                                  help="priority: the request classes' priorities order admission and preemption "
                                       "(vLLM's --scheduling-policy priority); fcfs: arrival order.")
            put("llm.scheduling_policy", policy, spec.scheduling_policy)
    return updates


def _headline(summary: dict, scenario: Scenario) -> None:
    slo = scenario.llm.slo
    p, ttft_key, tpot_key = llm.slo_keys(scenario)
    cols = st.columns(6)
    tokens = summary.get("output_tokens_per_s")
    items = ((f"TTFT {p}", llm.latency_text(summary.get(ttft_key))),
             (f"TPOT {p}", llm.latency_text(summary.get(tpot_key))),
             ("Meets both SLOs", fmt.pct(summary.get("goodput_share"))),
             ("Output tokens", fmt.compact(round(tokens) if compute.finite(tokens) else tokens) + "/s"),
             ("Cost per hour", fmt.usd(summary.get("cost_per_hour_usd"), "/h")),
             ("Per 1M tokens", fmt.usd(summary.get("cost_per_million_output_tokens_usd"))))
    helps = {"Meets both SLOs": f"Share of measured requests with TTFT ≤ {fmt.ms(slo.ttft_s)} and TPOT ≤ "
                                f"{fmt.ms(slo.tpot_s)}.",
             "Cost per hour": "Every GPU: replicas × tensor parallel × pipeline parallel × price per GPU.",
             "Output tokens": "Output tokens per second over the measured period, all replicas.",
             "Per 1M tokens": "Fleet cost of the run over the output tokens it produced, per million."}
    for col, (label, value) in zip(cols, items):
        col.metric(label, value, help=helps.get(label))
    verdict = ":green[**met**]" if summary.get("slo_met") else ":red[**missed**]"
    gpus = summary.get("gpus_per_replica")
    st.markdown(f"SLO TTFT {p} ≤ {llm.latency_text(slo.ttft_s)} and TPOT {p} ≤ {llm.latency_text(slo.tpot_s)}: "
                f"{verdict} (TTFT p50 {llm.latency_text(summary.get('ttft_p50_s'))}, TPOT p50 "
                f"{llm.latency_text(summary.get('tpot_p50_s'))}); "
                f"{fmt.count(summary.get('replicas_mean'), 'replicas')} × {fmt.count(gpus, 'GPUs')} of "
                f"{scenario.fleet.gpu}, KV cache {fmt.pct(summary.get('kv_utilization_mean'), 1)} used on average, "
                f"{fmt.count(summary.get('preemptions'), 'preemptions')}"
                + (f", {fmt.pct(summary.get('prefix_cache_hit_rate'), 1)} of the prompt tokens from the prefix cache"
                   if scenario.workload.shared_prefix is not None else "") + ".")
    if scenario.workload.classes:
        st.dataframe(llm.class_table(summary, scenario), hide_index=True)
    if summary.get("unstable"):
        st.warning(f"**Overloaded**: offered {fmt.rps(summary.get('offered_rps'))} against an estimated capacity of "
                   f"{fmt.rps(summary.get('capacity_rps'))}; the queue grows, so no steady-state TTFT is shown. Add "
                   "replicas or GPUs per replica.", icon="⚠️")
    if summary.get("step_time_estimated"):
        st.caption("Iteration times are a roofline **estimate** from the architecture and the GPU's datasheet "
                   "figures (llm.step_time), not a measurement.")


def _replica_grid(scenario: Scenario) -> None:
    pools = scenario.llm.disaggregation
    replicas = llm.replica_range(scenario.fleet.replicas if pools is None else pools.decode_replicas)
    tps = llm.grid_tensor_parallel(scenario)
    try:
        grid = compute.llm_sweep(dump_scenario(scenario), scenario.base_dir, scenario.run.seed,
                                 json.dumps(llm.replica_grid_updates(scenario, replicas, tps)), llm.SWEEP_REQUESTS)
    except CapsimError as exc:
        st.error(str(exc))
        return
    if pools is not None:  # the decode pool is what is swept; the x axis says so
        grid = grid.rename(columns={"decode_replicas": "replicas"})
    what = "replicas" if pools is None else "decode replicas"
    ok = _shown(grid, lambda r: f"{fmt.count(r['replicas'], what)} at TP {r['tensor_parallel']}")
    if ok.empty:
        return
    ok["tp"] = ok["tensor_parallel"].map(lambda t: f"TP {t}")
    slo, p = scenario.llm.slo, llm.slo_keys(scenario)[0]
    c1, c2, c3 = st.columns(3)
    c1.altair_chart(charts.with_rule(charts.lines(ok, "replicas", what, "ttft_ms", f"TTFT {p} (ms, log scale)",
                                                  "tp", "GPUs per replica", whole_x=True, log_y=True),
                                     slo.ttft_s * 1e3, "TTFT SLO"), width="stretch")
    c2.altair_chart(charts.with_rule(charts.lines(ok, "replicas", what, "tpot_ms", f"TPOT {p} (ms)", "tp",
                                                  "GPUs per replica", whole_x=True), slo.tpot_s * 1e3, "TPOT SLO"),
                    width="stretch")
    c3.altair_chart(charts.lines(ok, "replicas", what, "cost_per_hour_usd", "fleet cost ($/h)", "tp",
                                 "GPUs per replica", whole_x=True), width="stretch")
    pooled = "" if pools is None else f" with {fmt.count(pools.prefill_replicas, 'prefill replicas')}"
    st.caption(f"Static fleets on {scenario.fleet.gpu}{pooled}, each point about {llm.SWEEP_REQUESTS:,} requests of the "
               f"same traffic (one replication), {p} over its measured requests; the dashed line is the SLO. An "
               f"overloaded point (the queue grows) has no {p} and is left out.")


def _knob_sweep(scenario: Scenario, sid: str) -> None:
    key = st.radio("Knob", list(llm.KNOBS), format_func=lambda k: llm.KNOBS[k][0], horizontal=True,
                   key=f"{sid}:llm_knob")
    values = llm.knob_values(scenario, key)
    try:
        frame = compute.llm_sweep(dump_scenario(scenario), scenario.base_dir, scenario.run.seed,
                                  json.dumps([{key: v} for v in values]), llm.SWEEP_REQUESTS)
    except CapsimError as exc:
        st.error(str(exc))
        return
    column, label = key.rsplit(".", 1)[-1], llm.KNOBS[key][0]  # the sweep names its column by the last part
    ok = _shown(frame, lambda r: f"{column} {r[column]}")
    if ok.empty:
        return
    long = ok.melt(id_vars=[column], value_vars=["ttft_ms", "tpot_ms"], var_name="metric", value_name="ms")
    p = llm.slo_keys(scenario)[0]
    long["metric"] = long["metric"].map({"ttft_ms": f"TTFT {p}", "tpot_ms": f"TPOT {p}"})
    ok["kv_pct"] = ok["kv_utilization_mean"] * 100
    c1, c2 = st.columns(2)
    c1.altair_chart(charts.lines(long, column, label, "ms", f"latency {p} (ms, log scale)", "metric", "", log_x=True,
                                 log_y=True), width="stretch")
    c2.altair_chart(charts.lines(ok.assign(what="KV cache used"), column, label, "kv_pct", "KV cache used, mean (%)",
                                 "what", "", log_x=True), width="stretch")
    st.caption(f"{scenario.fleet.replicas} replicas × TP {scenario.llm.tensor_parallel} on {scenario.fleet.gpu}. "
               "max_num_seqs caps the batch: a smaller one shortens each iteration (TPOT) but queues requests "
               "(TTFT); max_num_batched_tokens sizes the prompt chunks: larger chunks start answers sooner but "
               "stretch the iterations that decode beside them.")


def _shown(frame, name):
    """Rows that ran and are stable; the others named (``name(row)``) in a caption."""
    for msg in sorted(set(frame.loc[frame["error"] != "", "error"])):
        st.caption(f"Not shown: {msg}")
    ran = frame[frame["error"] == ""]
    unstable = ran["unstable"].astype(bool) if "unstable" in ran else pd.Series(False, index=ran.index)
    if unstable.any():
        st.caption("Overloaded (the queue grows: no steady-state percentile), not shown: "
                   + ", ".join(name(r) for _, r in ran[unstable].iterrows()) + ".")
    ok = ran[~unstable].copy()
    if ok.empty:
        st.caption("No configuration of this sweep ran stably.")
    return ok


def _timelines(view) -> None:
    c1, c2 = st.columns(2)
    c1.altair_chart(charts.series(llm.queue_frames(view.series), "value", "sequences (all replicas)"),
                    width="stretch")
    c2.altair_chart(charts.series({"KV cache used": view.series}, "kv_utilization", "KV cache used (%)", scale=100.0),
                    width="stretch")
    c3, c4 = st.columns(2)
    c3.altair_chart(charts.series({"output": view.series}, "output_tokens_per_s", "output tokens/s"),
                    width="stretch")
    c4.altair_chart(charts.series({"arrivals": view.windows}, "arrival_rate_rps", "arrival rate (req/s)"),
                    width="stretch")
    st.caption(f"Sampled by the simulator; the first {view.warmup_s:g} s are warm-up. Running: sequences in the "
               "iterations; waiting: admitted to no batch yet (queued at their replica). KV cache used: the share of "
               "the fleet's KV blocks held by sequences.")


def _memory(scenario: Scenario, updates: dict[str, Any]) -> None:
    """One GPU's memory at each TP degree, for ``scenario``'s GPU and scheduler settings with ``updates``."""
    try:
        frame = llm.memory_breakdown(scenario, updates, llm.tensor_parallel_options(scenario))
    except CapsimError as exc:
        st.caption(f"No memory plan: {exc}")
        return
    gpu = updates.get("fleet.gpu", scenario.fleet.gpu)
    st.markdown(f"**Memory of one {gpu}** at each tensor-parallel degree")
    st.altair_chart(charts.memory_bars(frame, updates.get("llm.tensor_parallel", scenario.llm.tensor_parallel)),
                    width="stretch")
    first = frame.drop_duplicates("tp").set_index("tensor_parallel")
    lines = []
    for tp, row in first.iterrows():
        lines.append(f"TP {tp}: " + (f"KV cache for {fmt.compact(row['kv_tokens'], 'tokens')}" if row["fits"] else
                                     f"does not fit (over by {row['over_gib']:,.1f} GiB)"))
    st.caption(f"{first['gpu_gib'].iloc[0]:,.0f} GiB per GPU, {scenario.llm.model} {scenario.llm.dtype}: the "
               "weights split over the TP GPUs, the activation peak of the largest iteration, a 1 GiB runtime "
               "reserve, and the KV cache in what is left of gpu_memory_utilization "
               f"({scenario.llm.gpu_memory_utilization:g}; the rest is not budgeted). " + "; ".join(lines) + ".")
