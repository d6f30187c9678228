"""Training: does the model fit, how long and how much, how it scales with GPUs, which parallelism fits
(``sim.training``; the numbers of ``capsim train-plan``)."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import fmt
from dashboard.training import job_view, layouts_view, pipeline_view, training_examples
from sim.errors import CapsimError
from sim.hardware.gpus import gpu_catalog
from sim.training.scenario import load_training_plan

MEMORY_PARTS = ("weights_gb", "gradients_gb", "optimizer_gb", "activations_gb", "runtime_gb")


def render() -> None:
    st.title("Training")
    examples = training_examples()
    with st.sidebar:
        name = st.selectbox("Training plan", list(examples), key="tr_plan")
    path = Path(examples[name])
    plan = load_training_plan(path)
    overrides = _controls(plan)
    st.caption(f"Plan **{plan.name}** — {plan.description or name} (`capsim train-plan {name}`)")
    text, base = path.read_text(), str(path.parent)
    try:
        view = job_view(text, base, overrides)
    except CapsimError as exc:
        st.error(f"Does not run as set: {exc}")
        _layouts(text, base, overrides)
        return
    _headline(view["job"])
    _scaling(view["scaling"])
    _memory(view["scaling"], view["job"])
    _layouts(text, base, overrides)
    if dict(overrides).get("pipeline", plan.parallel.pipeline) > 1:
        _pipeline(text, base, overrides)


def _controls(plan) -> tuple:
    catalog = list(gpu_catalog())
    with st.sidebar:
        st.markdown("**Cluster and layout**")
        gpu = st.selectbox("GPU", catalog, index=catalog.index(plan.cluster.gpu) if plan.cluster.gpu in catalog else 0,
                           key="tr_gpu")
        gpus = st.number_input("GPUs", 1, 65536, plan.cluster.gpus, key="tr_gpus")
        zero = st.selectbox("ZeRO stage (0 = DDP)", [0, 1, 2, 3], index=plan.parallel.zero, key="tr_zero")
        tensor = st.selectbox("Tensor parallel", [1, 2, 4, 8], index=[1, 2, 4, 8].index(plan.parallel.tensor)
                              if plan.parallel.tensor in (1, 2, 4, 8) else 0, key="tr_tensor")
        pipeline = st.number_input("Pipeline stages", 1, 128, plan.parallel.pipeline, key="tr_pipeline")
        ckpt = st.toggle("Activation checkpointing", plan.parallel.activation_checkpointing, key="tr_ckpt")
        micro = st.number_input("Micro-batch (samples per GPU)", 1, 65536, plan.batch.micro_batch, key="tr_micro")
        mfu = st.slider("MFU (share of peak FLOPs)", 0.05, 1.0, plan.compute.mfu, 0.05, key="tr_mfu")
    return (("gpu", gpu), ("gpus", int(gpus)), ("zero", int(zero)), ("tensor", int(tensor)),
            ("pipeline", int(pipeline)), ("activation_checkpointing", bool(ckpt)), ("micro_batch", int(micro)),
            ("mfu", float(mfu)))


def _headline(job: dict) -> None:
    cols = st.columns(5)
    cols[0].metric("Time to train", f"{job['time_h']:,.1f} h", help="Expected, failures and checkpoints included")
    cols[1].metric("Cost", fmt.usd(job["cost_usd"]))
    cols[2].metric("GPU-hours", f"{job['gpu_hours']:,.0f}")
    cols[3].metric("Step", fmt.ms(job["step_s"]))
    cols[4].metric("Memory per GPU", f"{job['memory_gb']:,.1f} GB", help=f"of {job['gpu_memory_gb']:,.1f} GB")
    st.markdown(f"Layout **{job['layout']}** on {job['nodes']} node(s); pipeline bubble "
                f"{job['bubble_share']:.1%} of a step; {job['expected_failures']:.2f} failures expected.")


def _scaling(table: pd.DataFrame) -> None:
    ok = table[table["fits"]]
    if ok.empty:
        return
    long = pd.concat([ok.assign(series="predicted", hours=ok["time_h"], usd=ok["cost_usd"]),
                      ok.assign(series="ideal scaling", hours=ok["ideal_time_h"], usd=ok["cost_usd"].iloc[0])])
    x = alt.X("gpus:Q", title="GPUs (log scale)", scale=alt.Scale(type="log", base=2))
    color = alt.Color("series:N", title=None, legend=alt.Legend(orient="top"),
                      scale=alt.Scale(domain=["predicted", "ideal scaling"], range=["#1f77b4", "#8c8c8c"]))
    dash = alt.StrokeDash("series:N", legend=None, scale=alt.Scale(domain=["predicted", "ideal scaling"],
                                                                   range=[[1, 0], [4, 3]]))
    tip = [alt.Tooltip("gpus:Q", title="GPUs"), alt.Tooltip("layout:N"), alt.Tooltip("hours:Q", format=",.1f"),
           alt.Tooltip("usd:Q", title="cost ($)", format=",.0f"), alt.Tooltip("scaling_efficiency:Q", format=".0%")]
    time_chart = alt.Chart(long).mark_line(point=True).encode(
        x=x, y=alt.Y("hours:Q", title="time to train (hours, log scale)", scale=alt.Scale(type="log")),
        color=color, strokeDash=dash, tooltip=tip).properties(height=280)
    cost_chart = alt.Chart(long).mark_line(point=True).encode(
        x=x, y=alt.Y("usd:Q", title="cost ($)"), color=color, strokeDash=dash, tooltip=tip).properties(height=280)
    st.markdown("**Time and cost against GPUs** (the same layout, global batch fixed; dashed: ideal scaling)")
    left, right = st.columns(2)
    left.altair_chart(time_chart, width="stretch")
    right.altair_chart(cost_chart, width="stretch")


def _memory(table: pd.DataFrame, job: dict) -> None:
    ok = table[table["fits"]]
    if ok.empty:
        return
    parts = ok.melt(id_vars=["gpus"], value_vars=list(MEMORY_PARTS), var_name="part", value_name="GB")
    parts["part"] = parts["part"].str.removesuffix("_gb")
    bars = alt.Chart(parts).mark_bar().encode(
        x=alt.X("gpus:O", title="GPUs"), y=alt.Y("GB:Q", title="memory per GPU (GB)"),
        color=alt.Color("part:N", title=None, legend=alt.Legend(orient="top")),
        tooltip=["gpus:O", "part:N", alt.Tooltip("GB:Q", format=",.2f")])
    rule = alt.Chart(pd.DataFrame({"GB": [job["gpu_memory_gb"]]})).mark_rule(strokeDash=[4, 3], color="#444").encode(
        y="GB:Q")
    st.markdown("**Memory per GPU** (dashed: what the GPU holds)")
    st.altair_chart((bars + rule).properties(height=260), width="stretch")


def _layouts(text: str, base: str, overrides: tuple) -> None:
    try:
        table = layouts_view(text, base, overrides)
    except CapsimError as exc:
        st.error(f"Layouts: {exc}")
        return
    st.markdown(f"**Which parallelism fits on {dict(overrides)['gpus']} GPUs** (fastest first)")
    show = table.sort_values(["fits", "time_h"], ascending=[False, True])
    out = pd.DataFrame({"tensor": show["tensor"], "pipeline": show["pipeline"], "ZeRO": show["zero"],
                        "checkpointing": show["activation_checkpointing"],
                        "fits": show["fits"].map({True: "yes", False: "no"}),
                        "memory GB": show.get("memory_gb"), "time (h)": show.get("time_h"),
                        "cost ($)": show.get("cost_usd"), "why not": show["why not"]})
    st.dataframe(out, hide_index=True, width="stretch", height=320)


def _pipeline(text: str, base: str, overrides: tuple) -> None:
    ops = pipeline_view(text, base, overrides)
    chart = alt.Chart(ops).mark_bar().encode(
        x=alt.X("start:Q", title="time (forward = 1 unit, backward = 2)"), x2="end:Q",
        y=alt.Y("stage:O", title="pipeline stage"), color=alt.Color("kind:N", title=None, legend=alt.Legend(orient="top")),
        tooltip=["stage:O", "microbatch:Q", "kind:N"]).properties(height=40 + 24 * ops["stage"].nunique())
    st.markdown("**One step's 1F1B schedule** (white gaps: the bubble, (p − 1) / (m + p − 1) of the step)")
    st.altair_chart(chart, width="stretch")
