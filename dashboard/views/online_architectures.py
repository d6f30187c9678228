"""Online architectures: a result cache, edge sites, replica failures and host/device overlap, each as a
what-if beside its closed form (``dashboard/online.py`` holds the logic and the cached sweep).

Each tab starts from the loaded scenario when it has that section, else from the shipped example
(``architectures/caching``, ``edge``, ``failures``, ``overlap``); runs are cut to about
``online.MAX_REQUESTS`` requests.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, fmt, state, whatif
from dashboard import online as arch
from dashboard.views.common import run_view, unstable_warning
from sim.errors import CapsimError
from sim.scenario.keys import updated
from sim.scenario.load import dump_scenario, load_scenario
from sim.scenario.model import Scenario


def render() -> None:
    loaded = state.page_start("Online architectures")
    tabs = st.tabs(["Result caching", "Edge serving", "Failures and N+k", "Host/device overlap"])
    for tab, (section, show) in zip(tabs, (("cache", _cache), ("edge", _edge), ("failures", _failures),
                                           ("overlap", _overlap))):
        with tab:
            show(_start(loaded, section))


def _start(loaded: Scenario, section: str) -> Scenario:
    if getattr(loaded, section, None) is not None:
        return loaded
    st.caption(f"Starting from the shipped **{arch.EXAMPLES[section]}** example (the loaded scenario has no "
               f"{section} section).")
    return load_scenario(arch.EXAMPLES[section])


def _what_if(base: Scenario, updates: dict, label: str, requests: int = arch.MAX_REQUESTS,
             warmup_share: float | None = None):
    """The cached run of ``base`` with ``updates`` (cut to about ``requests``; measured after ``warmup_share``
    of it when given), or None after saying why not."""
    try:
        scenario = whatif.shortened(updated(base, updates), requests)
        if warmup_share is not None and scenario.run.duration_s is not None:
            scenario = updated(scenario, {"run.warmup_s": warmup_share * scenario.run.duration_s})
    except CapsimError as exc:
        st.error(f"{label}: {exc}")
        return None, None
    view = run_view(scenario, scenario.run.seed, label)
    if view is not None:
        unstable_warning(view.summary, label)
    return scenario, view


# ---------------------------------------------------------------- caching
def _cache(base: Scenario) -> None:
    sid, spec = whatif.scenario_key(base), base.cache
    keys = spec.keys
    c = st.columns(4)
    policy = c[0].selectbox("Policy", ["lru", "lfu", "ttl"], ["lru", "lfu", "ttl"].index(spec.policy),
                            key=f"{sid}:ca_policy")
    capacity = int(c[1].number_input("Capacity (entries)", 1, 10_000_000, spec.capacity_entries, key=f"{sid}:ca_cap"))
    ttl = c[2].number_input("TTL (s, ttl policy)", 0.001, 86_400.0, spec.ttl_s or 10.0, key=f"{sid}:ca_ttl")
    scope = c[3].selectbox("Scope", ["shared", "per_replica"], ["shared", "per_replica"].index(spec.scope),
                           key=f"{sid}:ca_scope")
    c = st.columns(3)
    distinct = int(c[0].number_input("Distinct keys K", 1, 10_000_000, keys.distinct_keys or 100_000,
                                     key=f"{sid}:ca_keys"))
    exponent = c[1].number_input("Zipf exponent s", 0.0, 3.0, keys.exponent, step=0.1, key=f"{sid}:ca_s")
    lookup_ms = c[2].number_input("Lookup (ms)", 0.0, 100.0, spec.lookup_s * 1e3, key=f"{sid}:ca_lookup")
    inputs = arch.CacheInputs(policy, capacity, ttl, scope, lookup_ms / 1e3, distinct, exponent)
    _, view = _what_if(base, arch.cache_updates(inputs), "With the cache", arch.CACHE_REQUESTS,
                       arch.CACHE_WARMUP_SHARE)
    _, without = _what_if(base, {"cache": None}, "Without a cache", arch.CACHE_REQUESTS, arch.CACHE_WARMUP_SHARE)
    if view is None:
        return
    s = view.summary
    cols = st.columns(5)
    cols[0].metric("Hit ratio (simulated)", fmt.pct(s.get("cache_hit_ratio")))
    cols[1].metric("Closed form", fmt.pct(s.get("cache_hit_ratio_theory")),
                   help="Che's approximation for LRU; the TTL formula for a shared TTL cache under Poisson "
                        "arrivals; none for LFU.")
    for col, (label, key, f) in zip(cols[2:], (("p99 latency", "latency_p99_s", fmt.ms),
                                               ("GPU utilisation", "utilization", lambda x: fmt.pct(x, 1)),
                                               ("Cost per 1M req", "cost_per_million_requests_usd", fmt.usd))):
        col.metric(label, f(s.get(key)), delta=fmt.delta_pct(s.get(key), without.summary.get(key)) if without else None,
                   delta_color="inverse", help="Change against the same traffic without a cache.")
    left, right = st.columns(2)
    left.altair_chart(charts.series({"hit ratio": view.series}, "cache_hit_ratio", "hit ratio (%)", scale=100),
                      width="stretch")
    curve = arch.cache_theory_curve(distinct, exponent, capacity)
    right.altair_chart(charts.long_lines(curve, "capacity_entries", "cache capacity (entries)",
                                         {"lru_che": "LRU (Che's approximation)", "perfect_lfu": "perfect LFU bound"},
                                         "hit ratio (%, log scale)", scale=100, dashed=("lru_che", "perfect_lfu")),
                       width="stretch")
    st.caption(f"Hit ratio over time (left: hits / lookups per interval, the cache filling from empty) and the "
               f"closed forms over capacity for Zipf s = {exponent:g} over K = {distinct:,} keys (right). "
               "A hit costs the lookup only; a miss pays the lookup, then the model.")


# ---------------------------------------------------------------- edge
def _edge(base: Scenario) -> None:
    sid, spec = whatif.scenario_key(base), base.edge
    cols = st.columns(len(spec.sites) + 1)
    sites = [int(col.number_input(f"{site.name} replicas", 1, 100, site.replicas, key=f"{sid}:ed_{k}"))
             for k, (col, site) in enumerate(zip(cols, spec.sites))]
    limit = int(cols[-1].number_input("Edge queue limit (requests)", 1, 10_000, spec.edge_queue_limit,
                                      key=f"{sid}:ed_limit"))
    _, view = _what_if(base, arch.edge_updates(sites, limit), "Edge sites")
    if view is None:
        return
    s = view.summary
    cols = st.columns(5)
    cols[0].metric("p50 latency", fmt.ms(s.get("latency_p50_s")))
    cols[1].metric("p99 latency", fmt.ms(s.get("latency_p99_s")))
    cols[2].metric("Mean round trip", fmt.ms(s.get("network_mean_s")))
    cols[3].metric("Served at the edge", fmt.pct(s.get("edge_share")))
    cols[4].metric("Spilled to central", fmt.pct(s.get("spill_share")),
                   help="Of the requests whose nearest site is an edge site, the share sent to central because "
                        "that site's queue was full.")
    table = arch.site_table(view.requests)
    if not table.empty:
        shown = pd.DataFrame({"site": table["site"], "share of served": table["share"].map(fmt.pct),
                              "mean round trip": table["network_mean_s"].map(fmt.ms),
                              "latency p50": table["latency_p50_s"].map(fmt.ms),
                              "latency p99": table["latency_p99_s"].map(fmt.ms),
                              "spilled": table["spilled_share"].map(fmt.pct)})
        st.dataframe(shown, hide_index=True, width="stretch")
    st.caption(f"Latency includes the network round trip. Fleet cost {fmt.usd(s.get('cost_per_hour_usd'), '/h')}, "
               "each site's replicas at its own price. With an idle fleet a request's latency is exactly its round "
               "trip plus its service time (tests/test_architecture_edge.py).")


# ---------------------------------------------------------------- failures
def _failures(base: Scenario) -> None:
    sid, spec = whatif.scenario_key(base), base.failures
    c = st.columns(6)
    replicas = int(c[0].number_input("Replicas", 1, 200, base.fleet.replicas, key=f"{sid}:fa_n"))
    replica_min = c[1].number_input("Replica MTBF (min, 0 = none)", 0.0, 1e6, (spec.replica_mtbf_s or 0) / 60,
                                    key=f"{sid}:fa_mtbf")
    node_min = c[2].number_input("Node MTBF (min, 0 = none)", 0.0, 1e6, (spec.node_mtbf_s or 0) / 60,
                                 key=f"{sid}:fa_node")
    per_node = int(c[3].number_input("Replicas per node", 1, 64, spec.replicas_per_node, key=f"{sid}:fa_per"))
    in_flight = c[4].selectbox("In-flight requests", ["retried", "lost"], ["retried", "lost"].index(spec.in_flight),
                               key=f"{sid}:fa_flight")
    attempts = int(c[5].number_input("Max attempts", 1, 10, spec.retry.max_attempts, key=f"{sid}:fa_tries"))
    inputs = arch.FailureInputs(replicas, replica_min * 60, node_min * 60, per_node, in_flight, attempts)
    scenario, view = _what_if(base, arch.failure_updates(inputs), "With failures")
    if view is None:
        return
    s = view.summary
    mttr, expected = arch.expected_availability(scenario)
    cols = st.columns(5)
    cols[0].metric("Availability", fmt.pct(s.get("availability")),
                   help="Ready replica-seconds / wanted replica-seconds over the measured window.")
    cols[1].metric("MTBF / (MTBF + MTTR)", fmt.pct(expected), help=f"MTTR = the mean cold start, {mttr:,.1f} s.")
    cols[2].metric("SLO violation", f"{s.get('slo_violation_min', 0):,.1f} min")
    cols[3].metric("Requests failed", fmt.count(s.get("requests_failed")))
    cols[4].metric("Requests retried", fmt.count(s.get("requests_retried")))
    st.altair_chart(charts.series({"ready": view.series}, "ready_replicas", "ready replicas", step=True),
                    width="stretch")
    _, down = _what_if(base, {"fleet.replicas": max(replicas - 1, 1), "failures": None}, "One replica down")
    if down is not None:
        verdict = "meets" if down.summary.get("slo_met") else "misses"
        st.markdown(f"**N+1 check**: with {max(replicas - 1, 1)} of {replicas} replicas and no failures the fleet "
                    f"{verdict} its SLO (p99 {fmt.ms(down.summary.get('latency_p99_s'))}). `capsim plan SCENARIO "
                    "--spare 1` finds the cheapest fleet that keeps it with any one replica down.")


# ---------------------------------------------------------------- overlap
def _overlap(base: Scenario) -> None:
    sid, spec = whatif.scenario_key(base), base.overlap
    c = st.columns(2)
    host_ms = c[0].number_input("Host work per batch (ms)", 0.0, 1000.0, (spec.host_s or 0.0) * 1e3, step=0.5,
                                key=f"{sid}:ov_host")
    item_ms = c[1].number_input("Host work per request (ms)", 0.0, 100.0, spec.host_per_item_s * 1e3, step=0.05,
                                key=f"{sid}:ov_item")
    scenario, view = _what_if(base, arch.overlap_updates(host_ms / 1e3, item_ms / 1e3), "This loop")
    if view is None:
        return
    s = view.summary
    serial, pipelined = s.get("capacity_serial_rps"), s.get("capacity_pipelined_rps")
    cols = st.columns(4)
    cols[0].metric("Capacity, serial loop", fmt.rps(serial), help="max over b of b / (H(b) + D(b)), all replicas")
    cols[1].metric("Capacity, pipelined", fmt.rps(pipelined), help="max over b of b / max(H(b), D(b))")
    cols[2].metric("Throughput gain", f"{s.get('overlap_gain', float('nan')):.2f}×")
    cols[3].metric("Device utilisation", fmt.pct(s.get("device_utilization"), 1))
    if not arch.finite(serial):
        return
    try:
        frame = arch.overlap_sweep(dump_scenario(scenario), scenario.base_dir, scenario.run.seed, float(serial))
    except CapsimError as exc:
        st.error(str(exc))
        return
    ok = frame[frame["error"] == ""]
    st.altair_chart(charts.lines(ok, "offered_rps", "offered load (req/s)", "throughput_rps", "throughput (req/s)",
                                 "mode", "loop"), width="stretch")
    st.caption(f"Served throughput against offered load: each loop follows the load up to its capacity, "
               f"{fmt.rps(serial)} serial and {fmt.rps(pipelined)} pipelined (the two-stage tandem line, "
               "sim/theory/overlap.py), then stays there.")
