"""Calibration: what a profile measured (or estimated) per batch size."""

from __future__ import annotations

import math

import streamlit as st

from dashboard import charts, compute, fmt, state, uploads
from dashboard.views.common import llm_note
from sim.errors import CapsimError
from sim.profiles.profile import builtin_profile_path, list_builtin_profiles, resolve_profile_path

UPLOAD = "upload a profile JSON…"


def _scenario_profile() -> str | None:
    svc = state.baseline().scenario.service
    return svc.profile if svc is not None and svc.type == "profile" else None


def render() -> None:
    loaded = state.page_start("Calibration")
    llm_note(loaded, "it has no service profile (its iteration time is llm.step_time); below, the shipped "
             "request-level profiles")
    shipped = list_builtin_profiles()
    loaded = _scenario_profile()
    options = [*shipped, UPLOAD]
    index = shipped.index(loaded) if loaded in shipped else 0
    with st.sidebar:
        choice = st.selectbox("Profile", options, index=index, key="cal_profile")
        upload = st.file_uploader("Profile JSON (capsim.profile/1)", type=["json"], key="cal_upload",
                                  max_upload_size=uploads.MAX_UPLOAD_MB) if choice == UPLOAD else None
    try:
        if choice == UPLOAD:
            if upload is None:
                st.info("Upload a profile JSON written by `capsim calibrate` to inspect it.")
                return
            path, label = state.stored_profile(upload.getvalue(), upload.name), upload.name
        elif choice == loaded:
            path, label = resolve_profile_path(choice, state.baseline().base_dir), choice
        else:
            path, label = builtin_profile_path(choice), choice
        table, facts = compute.profile_table(str(path))
    except CapsimError as exc:
        st.error(f"Profile not loaded: {exc}")
        return
    _facts(label, facts)
    _charts(table)
    _table(table)


def _facts(label: str, facts: dict) -> None:
    kind = "measured" if facts["kind"] == "measured" else "roofline **estimate** (not measured)"
    st.markdown(f"**{label}**: model `{facts['model']}` ({facts['dtype']}) on {facts['device_name']} — {kind}.")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Weights", fmt.nbytes(facts.get("weight_bytes")))
    c2.metric("Cold load", fmt.ms(facts.get("cold_start_load_s")),
              help="Weights ÷ measured load rate + runtime start + warm-up, from the profile's load section")
    mem = facts.get("memory", {})
    c3.metric("Memory baseline", fmt.nbytes(mem.get("baseline_bytes")))
    fits = mem.get("max_batch_size_fits")
    c4.metric("Largest batch that fits", fmt.compact(fits, "req") if fits else fmt.DASH,
              help=f"From the profile's memory fit: {fmt.count(fits, 'requests')} per batch" if fits else
              "The profile has no memory fit")


def _charts(table) -> None:
    t = table.assign(p50_ms=table["latency_p50_s"] * 1e3, p99_ms=table["latency_p99_s"] * 1e3,
                     per_req_us=table["time_per_request_s"] * 1e6, first_extra_ms=table["first_call_extra_s"] * 1e3,
                     mem_mib=table["peak_memory_bytes"] / 2**20)
    lat = t.melt(id_vars=["batch_size"], value_vars=["p50_ms", "p99_ms"], var_name="q", value_name="ms")
    lat["q"] = lat["q"].map({"p50_ms": "p50", "p99_ms": "p99"})
    c1, c2 = st.columns(2)
    c1.altair_chart(charts.lines(lat, "batch_size", "batch size (requests)", "ms", "batch latency (ms)", "q",
                                 "percentile", log_x=True, log_y=True), width="stretch")
    c2.altair_chart(charts.lines(t.assign(s="throughput"), "batch_size", "batch size (requests)", "throughput_rps",
                                 "throughput of one instance (req/s)", "s", "", log_x=True, legend=False),
                    width="stretch")
    c3, c4 = st.columns(2)
    c3.altair_chart(charts.lines(t.assign(s="busy time per request"), "batch_size", "batch size (requests)",
                                 "per_req_us", "busy time per request (µs)", "s", "", log_x=True, log_y=True,
                                 legend=False),
                    width="stretch")
    if t["first_extra_ms"].notna().any():
        c4.altair_chart(charts.bars(t, "batch_size", "batch size (requests)", "first_extra_ms",
                                    "first-call extra cost (ms)"), width="stretch")
    else:
        c4.info("This profile has no first-call measurements.")


def _table(table) -> None:
    show = table[["batch_size"]].rename(columns={"batch_size": "batch size"})
    show["latency p50"] = table["latency_p50_s"].map(fmt.ms)
    show["latency p99"] = table["latency_p99_s"].map(fmt.ms)
    show["throughput"] = table["throughput_rps"].map(fmt.rps)
    show["busy time / request"] = table["time_per_request_s"].map(fmt.ms)
    show["throughput gain vs smallest"] = table["throughput_gain"].map(lambda x: f"{x:,.2f} ×")
    show["busy time saved by batching"] = table["busy_time_saved"].map(lambda x: fmt.pct(x, 1))
    show["first call"] = table["first_call_s"].map(fmt.ms)
    show["first-call extra"] = table["first_call_extra_s"].map(fmt.ms)
    show["peak memory"] = table["peak_memory_bytes"].map(lambda b: fmt.nbytes(b) if not math.isnan(b) else fmt.DASH)
    st.dataframe(show, hide_index=True, width="stretch")
    st.caption("Throughput = batch size ÷ mean service time (latency + host overhead). Busy time saved: how much "
               "less replica time each request takes than at the smallest measured batch — the utilisation "
               "batching frees.")
