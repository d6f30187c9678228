"""Batching trade-off: latency, throughput and cost over max batch size × queue delay, with theory."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, compute, fmt, state
from dashboard.views.common import llm_note
from sim.errors import CapsimError
from sim.profiles.profile import as_profile, resolve_profile_path
from sim.scenario.load import dump_scenario
from sim.scenario.model import mean_rate_rps

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DELAYS_MS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
LOADS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def _largest_size(scenario) -> int:
    if scenario.service.type != "profile":
        return SIZES[-1]
    try:
        return as_profile(resolve_profile_path(scenario.service.profile, scenario.base_dir)).batch_sizes[-1]
    except CapsimError:
        return SIZES[-1]


def render() -> None:
    scenario = state.page_start("Batching trade-off")
    if llm_note(scenario, "its scheduler batches token by token (max_num_seqs, max_num_batched_tokens), not "
                "by this page's max batch size and queue delay"):
        return
    largest = _largest_size(scenario)
    sizes_allowed = [s for s in SIZES if s <= largest]
    with st.sidebar:
        st.markdown("**Grid**")
        sizes = st.multiselect("Max batch sizes (requests)", sizes_allowed,
                               default=[s for s in (1, 4, 16, 32) if s in sizes_allowed], key="bt_sizes")
        delays = st.multiselect("Max queue delays (ms)", DELAYS_MS, default=[0.0, 1.0, 5.0], key="bt_delays")
        per_point = st.select_slider("Requests per grid point", [5_000, 10_000, 20_000, 50_000], 10_000,
                                     key="bt_n", format_func=lambda n: f"{n:,}")
        seed = int(st.number_input("Seed", 0, 2**31 - 1, scenario.run.seed, key="bt_seed"))
    if not sizes or not delays:
        st.error("Pick at least one max batch size and one queue delay.")
        return
    text, base_dir = dump_scenario(scenario), scenario.base_dir
    st.caption(f"Each point simulates about {per_point:,} requests of the loaded traffic "
               f"(mean {fmt.rps(mean_rate_rps(scenario.workload.arrivals))}) on "
               f"{scenario.fleet.replicas} replicas at ${scenario.cost.usd_per_replica_hour:,.2f}/h each; "
               "preferred batch sizes are cleared so the max batch size is the target.")
    try:
        grid = compute.batching_grid(text, base_dir, seed, tuple(sorted(sizes)),
                                     tuple(d / 1e3 for d in sorted(delays)), per_point)
    except CapsimError as exc:
        st.error(str(exc))
        return
    _grid(grid)
    st.divider()
    _theory(text, base_dir, seed, per_point, scenario)


def _grid(grid) -> None:
    grid = grid.copy()
    errors = grid[grid["error"].astype(bool)] if "error" in grid else grid.iloc[0:0]
    for msg in sorted(set(errors["error"])):
        st.error(msg)
    ok = grid[~grid["error"].astype(bool)].copy()
    if ok.empty:
        return
    ok["delay"] = (ok["max_queue_delay_s"] * 1e3).map(lambda d: f"{d:g} ms")
    ok["p99_ms"] = ok["latency_p99_s"] * 1e3
    unstable = ok[ok["unstable"].astype(bool)]
    if len(unstable):
        st.warning(f"{len(unstable)} grid point(s) are unstable (overloaded): no steady-state p99 is shown for "
                   "them.", icon="⚠️")
    c1, c2, c3 = st.columns(3)
    c1.altair_chart(charts.lines(ok, "max_batch_size", "max batch size (requests)", "p99_ms", "latency p99 (ms)",
                                 "delay", "queue delay", log_x=True, log_y=True), width="stretch")
    c2.altair_chart(charts.lines(ok, "max_batch_size", "max batch size (requests)", "capacity_rps",
                                 "fleet capacity (req/s)", "delay", "queue delay", log_x=True),
                    width="stretch")
    c3.altair_chart(charts.lines(ok, "max_batch_size", "max batch size (requests)",
                                 "cost_per_million_at_capacity_usd", "cost per 1M req at capacity ($)", "delay",
                                 "queue delay", log_x=True), width="stretch")
    st.caption("Capacity: the most the fleet serves with every replica running its most efficient batch up to the "
               "max size. Cost per 1M requests at capacity = fleet $/h ÷ (capacity × 3,600 s) × 10⁶; at the "
               "loaded traffic it is in the table.")
    table = ok[["max_batch_size", "delay"]].rename(columns={"max_batch_size": "max batch", "delay": "queue delay"})
    table["p50"] = ok["latency_p50_s"].map(fmt.ms)
    table["p99"] = ok["latency_p99_s"].map(fmt.ms)
    table["throughput"] = ok["throughput_rps"].map(fmt.rps)
    table["capacity"] = ok["capacity_rps"].map(fmt.rps)
    table["mean batch"] = ok["mean_batch_size"].map(lambda x: fmt.count(x, "req"))
    table["within SLO"] = ok["goodput_share"].map(fmt.pct)
    table["utilisation"] = ok["utilization"].map(lambda x: fmt.pct(x, 1))
    table["cost per 1M req"] = ok["cost_per_million_requests_usd"].map(fmt.usd)
    table["cost per hour"] = ok["cost_per_hour_usd"].map(lambda x: fmt.usd(x, "/h"))
    table["stable"] = ok["unstable"].map(lambda u: "no" if u else "yes")
    st.dataframe(table, hide_index=True, width="stretch")


def _theory(text: str, base_dir: str, seed: int, per_point: int, scenario) -> None:
    st.subheader("Queueing theory beside the simulator")
    try:
        frame, info = compute.theory_vs_sim(text, base_dir, seed, LOADS, per_point)
    except CapsimError as exc:
        st.error(str(exc))
        return
    mu, c = info["service_rps"], info["servers"]
    st.markdown(
        f"One instance serves μ = {fmt.rps(mu)} at batch size 1 (mean service {fmt.ms(1 / mu)}); "
        f"c = {c} servers; Poisson arrivals at a load ρ = λ/(cμ) from {LOADS[0]:.0%} to {LOADS[-1]:.0%}. "
        "The seed's **L = 1/(μ − λ)** is the M/M/1 mean time in system per replica (load split evenly); "
        f"M/M/c pools the servers behind one queue (Erlang C). Formulas from {info['source']}."
    )
    columns = {"mm1_split_s": "M/M/1 per replica, 1/(μ − λ/c)", "md1_split_s": "M/D/1 per replica",
               "mmc_s": "M/M/c (Erlang C)", "sim_batch1_s": "simulated, no batching",
               "sim_batched_s": f"simulated, batches ≤ {info['max_batch_size']}"}
    st.altair_chart(charts.long_lines(frame, "offered_rps", "offered load λ (req/s)", columns,
                                      "mean latency (ms, log scale)", scale=1e3, height=380,
                                      dashed=("mm1_split_s", "md1_split_s", "mmc_s")), width="stretch")
    st.caption("Dashed: theory (exponential or deterministic service, no batching). Solid: the simulator with the "
               "profile's measured service times and the scenario's router. Batching trades a little latency at "
               "low load for capacity well beyond c·μ.")
