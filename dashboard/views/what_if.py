"""What-if: change traffic, model, GPU, batching, fleet and SLO; compare against the loaded scenario."""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from dashboard import charts, controls, fmt, state
from dashboard.views.common import headline, llm_note, run_view, unstable_warning
from sim.errors import CapsimError
from sim.scenario.keys import updated
from sim.scenario.load import dump_scenario


def render() -> None:
    base = state.page_start("What-if")
    if llm_note(base, "this page's inputs (service profile, batching) are request-level ones"):
        return
    inputs = controls.what_if_inputs(base)
    for error in inputs.errors:
        st.error(error)
    candidate = None
    if not inputs.errors:
        try:
            candidate = updated(base, inputs.updates)
        except CapsimError as exc:
            st.error(f"Candidate: {exc}")
    base_view = run_view(base, inputs.seed, "Baseline")
    cand_view = run_view(candidate, inputs.seed, "Candidate") if candidate is not None else None
    if base_view is None:
        return
    shown, scenario = (cand_view, candidate) if cand_view is not None else (base_view, base)
    changed = len(inputs.updates) > 0 and cand_view is not None
    st.subheader("Candidate" if changed else "Baseline (change an input on the left to compare)")
    unstable_warning(shown.summary, "The candidate" if changed else "The baseline")
    headline(shown.summary, base_view.summary if changed else None, scenario)
    for note in inputs.notes:
        st.caption(note)
    tab_cmp, tab_time, tab_dl = st.tabs(["Baseline vs candidate", "Timeline", "Downloads"])
    views = {"baseline": base_view, **({"candidate": cand_view} if changed else {})}
    with tab_cmp:
        _comparison(views, scenario)
    with tab_time:
        _timeline(views)
    with tab_dl:
        _downloads(scenario, shown, inputs.seed)


def comparison_table(views: dict) -> pd.DataFrame:
    rows = []
    base = views["baseline"].summary
    cand = views["candidate"].summary if "candidate" in views else None
    for key, label, f in fmt.SUMMARY_ROWS:
        row = {"metric": label, "baseline": f(base.get(key))}
        if cand is not None:
            row["candidate"] = f(cand.get(key))
            row["change"] = fmt.delta_pct(cand.get(key), base.get(key)) or fmt.DASH
        rows.append(row)
    return pd.DataFrame(rows)


def _comparison(views: dict, scenario) -> None:
    left, right = st.columns([6, 5])
    with left:
        st.table(comparison_table(views).set_index("metric"))
    with right:
        st.markdown("**Latency CDF** (served requests after warm-up)")
        log_x = st.toggle("Log latency axis", value=True, key="cdf_log")
        st.altair_chart(charts.latency_cdf({k: v.cdf for k, v in views.items()}, scenario.slo.latency_s, log_x),
                        width="stretch")


def _timeline(views: dict) -> None:
    any_view = next(iter(views.values()))
    st.caption(f"Arrival rate and p99 over {any_view.window_s:g} s windows of arrival time; queue and "
               f"replicas as sampled by the simulator. The first {any_view.warmup_s:g} s are warm-up.")
    windows = {k: v.windows for k, v in views.items()}
    series = {k: v.series for k, v in views.items()}
    c1, c2 = st.columns(2)
    c1.altair_chart(charts.series(windows, "arrival_rate_rps", "arrival rate (req/s)"), width="stretch")
    c2.altair_chart(charts.series(windows, "latency_p99_s", "latency p99 (ms)", scale=1e3), width="stretch")
    c3, c4 = st.columns(2)
    c3.altair_chart(charts.series(series, "queue_len", "queued requests (requests)"), width="stretch")
    c4.altair_chart(charts.series(series, "busy_replicas", "busy replicas (replicas)", step=True),
                    width="stretch")


def _downloads(scenario, view, seed: int) -> None:
    name = scenario.name
    st.caption(f"The scenario as built here and the results of its run (seed {seed}, "
               f"{len(view.requests):,} request records).")
    c1, c2, c3, c4 = st.columns(4)
    c1.download_button("Scenario YAML", dump_scenario(scenario), f"{name}.yaml", "application/x-yaml",
                       on_click="ignore")
    c2.download_button("Summary JSON", view.summary_json(name), f"{name}-summary.json", "application/json",
                       on_click="ignore")
    requests = view.requests
    c3.download_button("Requests CSV", lambda: requests.to_csv(index=False).encode(), f"{name}-requests.csv",
                       "text/csv", on_click="ignore")
    c4.download_button("Requests Parquet", lambda: _parquet(requests), f"{name}-requests.parquet",
                       "application/octet-stream", on_click="ignore")


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()
