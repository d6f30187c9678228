"""Many layouts at once: the scaling curve of one layout over GPU counts, and the cheapest configuration
that meets a deadline.

Every point is the closed-form estimate of ``job.py`` (no simulation), so a search over GPU types ×
GPU counts × tensor × pipeline × ZeRO stage × activation checkpointing × micro-batch evaluates tens of
thousands of layouts in seconds. A layout that cannot run or does not fit is kept with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from sim.errors import ScenarioError
from sim.experiments.sweep import grid
from sim.training.job import JobEstimate, estimate
from sim.training.layout import Layout, layout_problem
from sim.training.setup import Setup, base_layout, build_setup, catalog_keys

MAX_LAYOUTS = 500_000
TENSOR_DEGREES = (1, 2, 4, 8)
PIPELINE_DEGREES = (1, 2, 4, 8, 16)
MICRO_BATCHES = (1, 2, 4, 8)
ESTIMATE_COLUMNS = ("nodes", "step_s", "time_h", "gpu_hours", "cost_usd", "samples_per_s", "memory_gb",
                    "scaling_efficiency", "ideal_time_h")


@dataclass(frozen=True)
class Point:
    gpu: str
    layout: Layout
    job: JobEstimate | None
    problem: str | None = None  # why there is no estimate


def evaluate(setup: Setup, layout: Layout) -> Point:
    try:
        return Point(setup.device.key, layout, estimate(setup, layout))
    except ScenarioError as exc:
        return Point(setup.device.key, layout, None, str(exc))


# ---------------------------------------------------------------- scaling of one layout
def gpu_counts(setup: Setup, layout: Layout, up_to: int | None = None) -> list[int]:
    """Powers of two times the model-parallel group, from one group to as many data-parallel ranks as the
    global batch allows (or ``up_to`` GPUs), with the plan's own count."""
    group = layout.tensor * layout.pipeline
    widest = layout.global_batch // layout.micro_batch * group
    limit = min(widest, up_to or max(4 * layout.gpus, 8 * setup.device.fabric.gpus_per_node))
    counts, n = {layout.gpus}, group
    while n <= limit:
        counts.add(n)
        n *= 2
    return sorted(counts)


def scaling(setup: Setup, counts: list[int] | None = None) -> list[Point]:
    layout = base_layout(setup.plan)
    return [evaluate(setup, replace(layout, gpus=n)) for n in counts or gpu_counts(setup, layout)]


def points_table(points: list[Point], deadline_s: float | None = None) -> pd.DataFrame:
    """One row per point; ``scaling_efficiency`` is throughput per GPU against the smallest fitting count."""
    rows = [_row(p, deadline_s) for p in points]
    table = pd.DataFrame(rows)
    for column in ESTIMATE_COLUMNS:  # present even when no point fits
        if column not in table:
            table[column] = float("nan")
    ok = table[table["fits"]]
    if not ok.empty:
        ref = ok.loc[ok["gpus"].idxmin()]
        per_gpu = ref["samples_per_s"] / ref["gpus"]
        table["scaling_efficiency"] = table["samples_per_s"] / table["gpus"] / per_gpu
        table["ideal_time_h"] = ref["time_h"] * ref["gpus"] / table["gpus"]
    return table


def _row(p: Point, deadline_s: float | None) -> dict:
    lay = p.layout
    row = {"gpu": p.gpu, "gpus": lay.gpus, "data": lay.data, "tensor": lay.tensor, "pipeline": lay.pipeline,
           "zero": lay.zero, "activation_checkpointing": lay.activation_checkpointing, "micro_batch": lay.micro_batch,
           "accumulation": lay.accumulation, "layout": lay.describe(), "fits": p.job is not None,
           "problem": p.problem}
    j = p.job
    if j is None:
        return row
    s, m = j.step, j.memory
    row.update(
        nodes=j.nodes, step_s=s.total_s, compute_s=s.compute_s, tensor_comm_s=s.tensor_comm_s,
        pipeline_comm_s=s.pipeline_comm_s, bubble_s=s.bubble_s, sync_s=s.sync_s, sync_exposed_s=s.sync_exposed_s,
        optimizer_s=s.optimizer_s, straggler_s=s.straggler_s, compute_source=s.compute_source,
        steps=j.steps, work_h=j.work_s / 3600, time_h=j.wall_s / 3600, gpu_hours=j.gpu_hours, cost_usd=j.cost_usd,
        samples_per_s=j.samples_per_s, tokens_per_s=j.tokens_per_s, expected_failures=j.failures.expected_failures,
        checkpoint_interval_s=j.failures.interval_s, memory_gb=m.total_bytes / 1e9, weights_gb=m.weights_bytes / 1e9,
        gradients_gb=m.gradients_bytes / 1e9, optimizer_gb=m.optimizer_bytes / 1e9,
        activations_gb=m.activations_bytes / 1e9, runtime_gb=m.runtime_bytes / 1e9,
        gpu_memory_gb=m.gpu_memory_bytes / 1e9, tight=m.tight)
    if deadline_s is not None:
        row["meets_deadline"] = j.wall_s <= deadline_s
    return row


# ---------------------------------------------------------------- the cheapest meeting a deadline
@dataclass(frozen=True)
class PlanResult:
    table: pd.DataFrame  # every layout that fits, cheapest first
    refused: int  # layouts that cannot run or do not fit
    deadline_h: float | None
    best: dict | None  # the cheapest row meeting the deadline (the cheapest at all without one)


def search(setup_for_gpu: dict[str, Setup], deadline_h: float | None, counts: list[int],
           progress: bool = False) -> PlanResult:
    """Every layout of every GPU and count; the cheapest (then fastest) meeting ``deadline_h``."""
    from tqdm import tqdm

    rows, refused = [], 0
    deadline_s = deadline_h * 3600 if deadline_h is not None else None
    layouts = [(setup, layout) for setup in setup_for_gpu.values() for layout in layouts_of(setup, counts)]
    if len(layouts) > MAX_LAYOUTS:
        raise ScenarioError(f"plan: {len(layouts):,} layouts to evaluate; at most {MAX_LAYOUTS:,}: give fewer "
                            "plan.gpus or plan.gpu_types")
    for setup, layout in tqdm(layouts, disable=not progress, unit="layout", desc="train-plan", dynamic_ncols=True):
        point = evaluate(setup, layout)
        if point.job is None:
            refused += 1
        else:
            rows.append(_row(point, deadline_s))
    table = pd.DataFrame(rows)
    if table.empty:
        return PlanResult(table, refused, deadline_h, None)
    table = table.sort_values(["cost_usd", "time_h"], kind="stable").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    meeting = table[table["meets_deadline"]] if deadline_s is not None else table
    best = meeting.iloc[0].to_dict() if not meeting.empty else None
    return PlanResult(table, refused, deadline_h, best)


def plan_setups(setup: Setup) -> tuple[dict[str, Setup], list[str]]:
    """One setup per GPU type the plan searches (``plan.gpu_types``, default the catalog), and notes on the
    catalog GPUs left out (no peak in the plan's precision). A GPU type the plan names must work."""
    space = setup.plan.plan
    named = bool(space and space.gpu_types)
    setups, notes = {}, []
    for key in space.gpu_types if named else catalog_keys():
        try:
            setups[key] = setup if key == setup.device.key else build_setup(setup.plan, key)
        except ScenarioError as exc:
            if named:
                raise ScenarioError(str(exc).replace("cluster.gpu", "plan.gpu_types", 1)) from None
            notes.append(f"{key} left out: {exc}")
    return setups, notes


def plan_counts(setup: Setup) -> list[int]:
    space = setup.plan.plan
    if space and space.gpus:
        return sorted(set(space.gpus))
    limit = space.max_gpus if space else 1024
    return [2**k for k in range(int(math.log2(limit)) + 1)]


def layouts_of(setup: Setup, counts: list[int], every: bool = False) -> list[Layout]:
    """The layouts the planner tries at these GPU counts; ``every``: also those that cannot run this model
    (an estimate then says why), not only those that can."""
    base = base_layout(setup.plan)
    model, per_node = setup.model, setup.device.fabric.gpus_per_node
    transformer = model.transformer is not None
    params = {"gpus": counts,
              "tensor": [t for t in TENSOR_DEGREES if t <= per_node] if transformer or every else [1],
              "pipeline": [p for p in PIPELINE_DEGREES if p <= model.layers],
              "zero": [0, 1, 2, 3], "activation_checkpointing": [False, True] if transformer or every else [False],
              "micro_batch": [base.micro_batch] if every else sorted({base.micro_batch, *MICRO_BATCHES})}
    out = []
    for values in grid(params):
        layout = replace(base, **values)
        if layout.gpus % (layout.tensor * layout.pipeline) or (layout.zero and layout.data == 1):
            continue  # not a layout of this many GPUs; ZeRO over one data-parallel rank is DDP
        if every or not layout_problem(layout, model, per_node):
            out.append(layout)
    return out
