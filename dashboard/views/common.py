"""Pieces several pages share: running a scenario with errors shown as messages, the result header."""

from __future__ import annotations

import streamlit as st

from dashboard import compute, fmt
from sim.errors import CapsimError
from sim.scenario.load import dump_scenario
from sim.scenario.model import Scenario


def run_view(scenario: Scenario, seed: int, label: str) -> compute.RunView | None:
    """The cached run of ``scenario``, or None after showing why it could not run (never a traceback)."""
    try:
        return compute.simulate(dump_scenario(scenario), scenario.base_dir, seed)
    except CapsimError as exc:
        st.error(f"{label}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a page shows the message, never a traceback
        st.error(f"{label}: the simulation failed: {type(exc).__name__}: {exc}")
    return None


def unstable_warning(summary: dict, label: str) -> None:
    """A clear warning for an overloaded run; its latency percentiles are withheld when unbounded."""
    if summary.get("overloaded") and not summary.get("unstable"):
        st.warning(
            f"**{label} is overloaded**: offered {fmt.rps(summary.get('offered_rps'))} against a capacity of "
            f"{fmt.rps(summary.get('capacity_rps'))}. The queue limit and timeout shed "
            f"{100 * (summary.get('shed_share') or 0):.1f} % of requests (rejected or timed out); the latencies "
            "shown are those of the requests that got through. Add replicas, raise the batch size or lower "
            "the load.",
            icon="⚠️",
        )
        return
    if not summary.get("unstable"):
        return
    st.warning(
        f"**{label} is unstable**: offered {fmt.rps(summary.get('offered_rps'))} against a capacity of "
        f"{fmt.rps(summary.get('capacity_rps'))}; the backlog ends at {fmt.count(summary.get('backlog_at_end'), 'requests')} "
        f"and grows {fmt.rps(summary.get('backlog_growth_rps'))}. There is no steady-state p99: the observed "
        f"p99 ({fmt.ms(summary.get('latency_p99_observed_s'))}) only grows with the run length. Add replicas, "
        "raise the batch size or lower the load.",
        icon="⚠️",
    )


def headline(summary: dict, base: dict | None, scenario: Scenario) -> None:
    """p50/p95/p99, SLO attainment and cost as metrics, with the change against the baseline."""
    slo = scenario.slo
    cols = st.columns(6)
    items = (
        ("p50 latency", "latency_p50_s", fmt.ms, "inverse"),
        ("p95 latency", "latency_p95_s", fmt.ms, "inverse"),
        ("p99 latency", "latency_p99_s", fmt.ms, "inverse"),
        ("Within SLO", "goodput_share", fmt.pct, "normal"),
        ("Cost per hour", "cost_per_hour_usd", lambda x: fmt.usd(x, "/h"), "inverse"),
        ("Cost per 1M req", "cost_per_million_requests_usd", fmt.usd, "inverse"),
    )
    helps = {"goodput_share": f"Share of measured requests served within {fmt.ms(slo.latency_s)} "
                              "(rejected and timed-out requests count as misses).",
             "cost_per_million_requests_usd": "Fleet cost of the run divided by requests served, per million."}
    for col, (label, key, f, colour) in zip(cols, items):
        value = summary.get(key)
        delta = fmt.delta_pct(value, base.get(key)) if base is not None else None
        col.metric(label, f(value), delta=delta, delta_color=colour, help=helps.get(key))
    q = summary.get(f"latency_p{slo.percentile:g}_slo_s")
    verdict = ":green[**met**]" if summary.get("slo_met") else ":red[**missed**]"
    st.markdown(f"SLO p{slo.percentile:g} ≤ {fmt.ms(slo.latency_s)}: {verdict} "
                f"(p{slo.percentile:g} = {fmt.ms(q)}; throughput {fmt.rps(summary.get('throughput_rps'))}, "
                f"utilisation {fmt.pct(summary.get('utilization'), 1)})")


def llm_note(scenario: Scenario, what: str) -> bool:
    """On an llm (token-level) scenario: one note saying what this page shows instead, and a link to the LLM
    serving page; True when shown."""
    if scenario.llm is None:
        return False
    from dashboard.views import llm  # the LLM page uses this module too

    st.info(f"**{scenario.name}** is a token-level LLM scenario: {what}. The **LLM serving** page simulates it "
            "(TTFT, TPOT and cost against replicas, tensor parallelism and the scheduler's knobs).",
            icon=":material/forum:")
    st.page_link(st.Page(llm.render, title=llm.TITLE, icon=llm.ICON, url_path=llm.URL),
                 label="Open the LLM serving page")
    return True
