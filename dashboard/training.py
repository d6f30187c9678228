"""Cached computations of the training page: pure functions of a plan's YAML text and its folder.

A plan crosses the cache boundary as YAML text plus the overrides the page sets (a tuple of pairs);
what comes back is plain data. A plan that cannot run or does not fit is a ``CapsimError`` (not cached).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from sim.scenario.examples import example_kind, list_examples
from sim.scenario.yaml_reader import read_yaml
from sim.theory.pipeline import one_f_one_b
from sim.training import planner
from sim.training.job import estimate_plan
from sim.training.scenario import TrainingPlan, training_plan_from_dict
from sim.training.setup import base_layout, build_setup

SECTIONS = {"gpu": "cluster", "gpus": "cluster", "zero": "parallel", "tensor": "parallel", "pipeline": "parallel",
            "activation_checkpointing": "parallel", "micro_batch": "batch", "mfu": "compute"}


def training_examples() -> dict[str, str]:
    """Shipped training plans: name -> path."""
    return {name: str(path) for name, path in list_examples().items() if example_kind(path) == "training"}


def plan_with(yaml_text: str, base_dir: str, overrides: tuple) -> TrainingPlan:
    data = read_yaml(yaml_text, "the training plan", "a training plan")
    if not isinstance(data, dict):
        return training_plan_from_dict(data, base_dir)
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for key, value in overrides:
        data.setdefault(SECTIONS[key], {})[key] = value
    return training_plan_from_dict(data, base_dir, "the training plan")


@st.cache_data(max_entries=32, show_spinner="Estimating…")
def job_view(yaml_text: str, base_dir: str, overrides: tuple) -> dict:
    """The plan's job (headline numbers, memory parts, step parts) and its scaling over GPU counts."""
    setup = build_setup(plan_with(yaml_text, base_dir, overrides))
    job = estimate_plan(setup)
    scaling = planner.points_table(planner.scaling(setup))
    m, s = job.memory, job.step
    return {
        "job": {"time_h": job.wall_s / 3600, "cost_usd": job.cost_usd, "gpu_hours": job.gpu_hours,
                "step_s": s.total_s, "memory_gb": m.total_bytes / 1e9, "gpu_memory_gb": m.gpu_memory_bytes / 1e9,
                "nodes": job.nodes, "layout": job.layout.describe(), "expected_failures": job.failures.expected_failures,
                "bubble_share": s.bubble_share, "tokens_per_s": job.tokens_per_s, "samples_per_s": job.samples_per_s},
        "step": pd.DataFrame({"part": ["compute", "tensor-parallel comm", "pipeline sends", "pipeline bubble",
                                       "gradient sync (exposed)", "optimizer", "stragglers"],
                              "seconds": [s.compute_s, s.tensor_comm_s, s.pipeline_comm_s, s.bubble_s,
                                          s.sync_exposed_s, s.optimizer_s, s.straggler_s]}),
        "scaling": scaling,
    }


@st.cache_data(max_entries=32, show_spinner="Checking layouts…")
def layouts_view(yaml_text: str, base_dir: str, overrides: tuple) -> pd.DataFrame:
    """Every layout of the plan's GPU count (tensor × pipeline × ZeRO × checkpointing): fits or why not."""
    setup = build_setup(plan_with(yaml_text, base_dir, overrides))
    gpus = setup.plan.cluster.gpus
    points = [planner.evaluate(setup, layout) for layout in planner.layouts_of(setup, [gpus], every=True)]
    table = planner.points_table(points)
    table["why not"] = table["problem"].fillna("").str.split(": ", n=1).str[-1].str.slice(0, 120)
    return table


@st.cache_data(max_entries=8, show_spinner=False)
def pipeline_view(yaml_text: str, base_dir: str, overrides: tuple) -> pd.DataFrame:
    """The 1F1B schedule of one step on the plan's pipeline (forward 1, backward 2 time units)."""
    plan = plan_with(yaml_text, base_dir, overrides)
    layout = base_layout(plan)
    ops = one_f_one_b(layout.pipeline, min(layout.accumulation, 16), 1.0, 2.0)
    return pd.DataFrame([{"stage": op.stage, "microbatch": op.microbatch, "kind": op.kind, "start": op.start_s,
                          "end": op.end_s} for op in ops])
