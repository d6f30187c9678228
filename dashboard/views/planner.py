"""Planner: cost against p99 over GPU type × batching × replicas, and the cheapest config meeting the SLO
(``sim.planner.search``, run on press of a button)."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard import fmt, state, whatif
from dashboard.compute import plan_table
from dashboard.views.common import llm_note
from sim.errors import CapsimError
from sim.scenario.load import dump_scenario

BATCH_SIZES = (1, 4, 8, 16, 32, 64)
DELAYS_MS = (0.0, 1.0, 2.0, 5.0)


def render() -> None:
    scenario = state.page_start("Planner")
    if llm_note(scenario, "this page searches batching; plan its GPU type, tensor parallelism, scheduler knobs and "
                "replicas against TTFT and TPOT with `capsim plan` (docs/planner.md)"):
        return
    sid = whatif.scenario_key(scenario)
    with st.sidebar:
        st.markdown("**Search**")
        slo_ms = st.number_input(f"SLO p{scenario.slo.percentile:g} (ms)", 0.001, 1e6, scenario.slo.latency_s * 1e3,
                                 format="%.3g", key=f"{sid}:pl_slo")
        search = st.selectbox("Search", ["bisect", "grid"], key=f"{sid}:pl_search",
                              help="bisect: per-replica rate search then replica count; grid: every combination")
        estimates = st.toggle("Include roofline estimates for catalog GPUs", False, key=f"{sid}:pl_est")
        sizes = st.multiselect("Max batch sizes (requests)", BATCH_SIZES, [1, 8, 32], key=f"{sid}:pl_sizes")
        delays = st.multiselect("Max queue delays (ms)", DELAYS_MS, [0.0, 1.0], key=f"{sid}:pl_delays")
        per_run = st.select_slider("Requests per run", [5_000, 10_000, 20_000, 50_000], 10_000,
                                   format_func=lambda n: f"{n:,}", key=f"{sid}:pl_n")
        go = st.button("Run the planner", type="primary", key=f"{sid}:pl_go")
    if not sizes or not delays:
        st.error("Pick at least one max batch size and one queue delay.")
        return
    args = (dump_scenario(scenario), scenario.base_dir, scenario.run.seed, slo_ms / 1e3, search, estimates,
            tuple(sorted(sizes)), tuple(d / 1e3 for d in sorted(delays)), per_run)
    if go:
        st.session_state["planner_args"] = args
    if st.session_state.get("planner_args") != args:
        st.info("Set the search on the left and press **Run the planner** (it simulates tens of configurations "
                "at shortened horizons; a minute or so).")
        return
    try:
        table, best, notes, params = plan_table(*args)
    except CapsimError as exc:
        st.error(f"Planner: {exc}")
        return
    except Exception as exc:  # noqa: BLE001 - never a traceback on the page
        st.error(f"Planner failed: {type(exc).__name__}: {exc}")
        return
    for note in notes:
        st.caption(f"Note: {note}")
    _recommendation(best, params, slo_ms)
    _frontier(table)


def _recommendation(best: dict | None, params: list[str], slo_ms: float) -> None:
    if best is None:
        st.warning("No configuration met the SLO: widen the search (more batch sizes, GPUs) or relax the SLO.")
        return
    shown = {k: best.get(k) for k in params if k not in ("service.profile", "cost.usd_per_replica_hour")}
    st.success(f"Recommended: **{fmt.usd(best['cost_per_hour_usd'], '/h')}**, p99 upper bound "
               f"{fmt.ms(best['slo_upper_s'])} ≤ {slo_ms:g} ms — " +
               ", ".join(f"{k.split('.')[-1].replace('_', ' ')} = {_value(k, v)}" for k, v in shown.items()))


def _value(key: str, value) -> str:
    if key.endswith("_delay_s"):
        return fmt.ms(value)
    return str(value)


def _frontier(table) -> None:
    t = table.copy()
    t["p99_ms"] = t["slo_upper_s"] * 1e3
    t["verdict"] = t.apply(lambda r: "unstable" if r["unstable"] else "meets SLO" if r["meets_slo"] else "misses SLO",
                           axis=1)
    t = t[t["p99_ms"].notna()]
    tooltip = [alt.Tooltip("cost_per_hour_usd:Q", title="cost ($/h)", format=",.2f"),
               alt.Tooltip("p99_ms:Q", title="p99 upper (ms)", format=",.3f")]
    tooltip += [alt.Tooltip(f"{c}:N", title=c.split(".")[-1]) for c in ("fleet.gpu", "batching.max_batch_size",
                                                                      "fleet.replicas") if c in t]
    points = alt.Chart(t).mark_circle(size=70).encode(
        x=alt.X("cost_per_hour_usd:Q", title="fleet cost ($/h)"),
        y=alt.Y("p99_ms:Q", title="p99 latency, upper 95% bound (ms, log scale)", scale=alt.Scale(type="log")),
        color=alt.Color("verdict:N", title=None, legend=alt.Legend(orient="top")), tooltip=tooltip)
    front = t[t["on_front"]].sort_values("cost_per_hour_usd")
    line = alt.Chart(front).mark_line(color="#333", strokeDash=[4, 3]).encode(x="cost_per_hour_usd:Q", y="p99_ms:Q")
    st.markdown("**Cost vs p99** (dashed: the frontier — no other configuration is both cheaper and faster)")
    st.altair_chart(points + line, width="stretch")
    show = [c for c in ("rank", "fleet.gpu", "batching.max_batch_size", "batching.max_queue_delay_s",
                        "fleet.replicas") if c in t]
    out = t[show].copy()
    if "batching.max_queue_delay_s" in out:
        out["batching.max_queue_delay_s"] = out["batching.max_queue_delay_s"].map(fmt.ms)
    out = out.rename(columns=lambda c: c.split(".")[-1].replace("_", " "))
    out["cost"] = t["cost_per_hour_usd"].map(lambda x: fmt.usd(x, "/h"))
    out["p99 (upper)"] = t["slo_upper_s"].map(fmt.ms)
    out["verdict"] = t["verdict"]
    st.dataframe(out.head(40), hide_index=True, width="stretch")
