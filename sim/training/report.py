"""A training plan for people: tables in the terminal, and the files of ``capsim train-plan --out``.

The folder holds ``summary.json`` (the plan's own layout: memory, step, job), ``scaling.parquet`` and
``scaling.png`` (time and cost against GPUs, with the ideal-scaling line), ``memory.png`` (the memory
per GPU of each GPU count, against the GPU's memory) and, in planner mode, ``candidates.parquet``
(every layout that fits, cheapest first). It is written atomically (``sim.results.files``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from sim.results.files import writing_folder
from sim.results.output import json_safe
from sim.training.job import GB, JobEstimate
from sim.training.planner import PlanResult
from sim.training.setup import Setup

TRAIN_FILES = ("summary.json", "scaling.parquet", "scaling.png", "memory.png", "candidates.parquet")
TABLE_ROWS = 15


def is_train_plan_folder(path: Path) -> bool:
    return all(entry.name in TRAIN_FILES for entry in path.iterdir())


def hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.2f} s"
    return f"{seconds / 60:,.1f} min" if seconds < 7200 else f"{seconds / 3600:,.1f} h"


def usd(x: float) -> str:
    return f"${x:,.2f}" if x < 100 else f"${x:,.0f}"


def print_job(job: JobEstimate, setup: Setup, console) -> None:
    from rich.columns import Columns
    from rich.table import Table

    m, s, f = job.memory, job.step, job.failures
    model = setup.model
    console.print(f"[bold]{setup.plan.name}[/]: {model.name} ({model.parameters / 1e9:,.2f} B parameters), "
                  f"{job.layout.gpus} × {job.gpu} on {job.nodes} node{'s' * (job.nodes > 1)}, {job.layout.describe()}")
    wall = job.wall_s
    rate = f"{job.tokens_per_s:,.0f} tokens/s" if job.tokens_per_sample > 1 else f"{job.samples_per_s:,.1f} samples/s"
    parts = {
        "memory per GPU (GB)": [(k, f"{v / GB:,.1f}") for k, v in (
            ("weights", m.weights_bytes), ("gradients", m.gradients_bytes), (f"{setup.plan.optimizer} states",
            m.optimizer_bytes), ("activations", m.activations_bytes), ("runtime", m.runtime_bytes),
            ("total", m.total_bytes), (f"{job.gpu} holds", m.gpu_memory_bytes))],
        "one step (s)": [(k, f"{v:.4g}") for k, v in (
            (f"compute ({s.compute_source})", s.compute_s), ("tensor-parallel comm", s.tensor_comm_s),
            ("pipeline sends", s.pipeline_comm_s), ("pipeline bubble", s.bubble_s),
            (f"grad sync, exposed of {s.sync_s:.3g}", s.sync_exposed_s), ("optimizer", s.optimizer_s),
            ("stragglers", s.straggler_s), ("step", s.total_s))],
        "the job": [("steps", f"{job.steps:,}"), ("throughput", rate), ("work", hours(job.work_s)),
                    (f"checkpoint every ({f.interval_rule})", hours(f.interval_s)),
                    ("expected failures", f"{f.expected_failures:,.2f}"), ("time to train", hours(wall)),
                    ("GPU-hours", f"{job.gpu_hours:,.0f}"), ("cost", usd(job.cost_usd))],
    }
    tables = []
    for title, rows in parts.items():
        t = Table(title=title, show_header=False, title_style="bold")
        t.add_column(no_wrap=True)
        t.add_column(justify="right", no_wrap=True)
        for name, value in rows:
            t.add_row(name, value)
        tables.append(t)
    console.print(Columns(tables))
    if m.tight:
        console.print(f"[yellow]note[/]: {m.total_bytes / m.gpu_memory_bytes:.0%} of the GPU's memory: fits on "
                      "paper; fragmentation and temporary buffers may not")
    failing = (f"job MTBF {hours(f.job_mtbf_s)}, checkpoint {f.checkpoint_bytes / GB:,.1f} GB in "
               f"{hours(f.checkpoint_s)}; Young's interval {hours(f.young_interval_s)}, Daly's "
               f"{hours(f.daly_interval_s)}" if math.isfinite(f.job_mtbf_s) else "no failures modelled")
    console.print(f"reliability: {failing}; links: {setup.device.fabric.source}")


def print_scaling(table: pd.DataFrame, console) -> None:
    """One row per GPU count, 80 columns wide: the layout's fixed part (TP, PP, ZeRO) is in the title; each
    row has its nodes, micro-batch × accumulation, memory, step, time, scaling efficiency and cost."""
    from rich.table import Table

    first = table.iloc[0]
    fixed = [f"{k} {int(first[c])}" for k, c in (("TP", "tensor"), ("PP", "pipeline")) if first[c] > 1]
    fixed += [f"ZeRO-{int(first['zero'])}" if first["zero"] else "DDP"]
    fixed += ["activation checkpointing"] if first["activation_checkpointing"] else []
    t = Table(title=f"scaling: {' · '.join(fixed)} over more GPUs (global batch fixed)", header_style="bold")
    for col in ("GPUs", "nodes", "mb×acc", "GB/GPU", "step s", "time", "eff.", "cost"):
        t.add_column(col, justify="right", no_wrap=True)
    refused = False
    for _, r in table.iterrows():
        mb = f"{int(r['micro_batch'])}×{int(r['accumulation'])}"
        if not r["fits"]:
            refused = True
            t.add_row(str(r["gpus"]), "", mb, "[red]too big[/]" if "does not fit" in str(r["problem"])
                      else "[red]n/a[/]", "", "", "", "")
            continue
        t.add_row(str(r["gpus"]), f"{r['nodes']:.0f}", mb, f"{r['memory_gb']:,.1f}", f"{r['step_s']:.4g}",
                  hours(r["time_h"] * 3600), f"{r['scaling_efficiency']:.0%}", usd(r["cost_usd"]))
    console.print(t)
    if refused:
        console.print("too big: does not fit the GPU's memory at that count; n/a: the numbers do not divide "
                      "(scaling.parquet's problem column says why)")


def print_search(result: PlanResult, console) -> None:
    from rich.table import Table

    deadline = f"deadline {result.deadline_h:g} h" if result.deadline_h else "no deadline"
    t = Table(title=f"planner: every layout that fits, cheapest first ({deadline})", header_style="bold")
    for col in ("#", "GPU", "GPUs", "layout", "memory GB", "time to train", "cost", "verdict"):
        t.add_column(col, justify="left" if col in ("GPU", "layout", "verdict") else "right")
    for _, r in result.table.head(TABLE_ROWS).iterrows():
        verdict = ("[green]meets deadline[/]" if r.get("meets_deadline", True) else "[yellow]too slow[/]")
        t.add_row(str(r["rank"]), r["gpu"], str(r["gpus"]), r["layout"], f"{r['memory_gb']:,.1f}",
                  hours(r["time_h"] * 3600), usd(r["cost_usd"]), verdict)
    console.print(t)
    console.print(f"{len(result.table):,} layouts fit, {result.refused:,} did not or could not run")
    best = result.best
    if best is None:
        console.print("[bold red]no layout meets the deadline[/]: allow more GPUs (plan.max_gpus), other GPU types, "
                      "or a later deadline")
    else:
        console.print(f"[bold]recommended[/]: {best['gpus']} × {best['gpu']}, {best['layout']}: "
                      f"{hours(best['time_h'] * 3600)}, {usd(best['cost_usd'])}")


def write_outputs(out, job: JobEstimate | None, scaling: pd.DataFrame, result: PlanResult | None, title: str,
                  force: bool = False) -> list[str]:
    written = ["summary.json", "scaling.parquet", "scaling.png", "memory.png"]
    with writing_folder(out, force=force, replaceable=is_train_plan_folder) as tmp:
        (tmp / "summary.json").write_text(json.dumps(summary(job, result), indent=2, default=json_safe) + "\n")
        scaling.to_parquet(tmp / "scaling.parquet", index=False)
        plot_scaling(scaling, title, tmp / "scaling.png")
        plot_memory(scaling, title, tmp / "memory.png")
        if result is not None and not result.table.empty:
            result.table.to_parquet(tmp / "candidates.parquet", index=False)
            written.append("candidates.parquet")
    return written


def summary(job: JobEstimate | None, result: PlanResult | None) -> dict:
    out: dict = {}
    if job is not None:
        out = {"gpu": job.gpu, "layout": asdict(job.layout), "nodes": job.nodes, "memory": asdict(job.memory),
               "memory_total_bytes": job.memory.total_bytes, "step": asdict(job.step), "step_s": job.step.total_s,
               "samples": job.samples, "steps": job.steps, "work_s": job.work_s, "wall_s": job.wall_s,
               "failures": {k: json_safe(v) for k, v in asdict(job.failures).items()}, "gpu_hours": job.gpu_hours,
               "cost_usd": job.cost_usd, "samples_per_s": job.samples_per_s, "tokens_per_s": job.tokens_per_s}
    if result is not None:
        out["planner"] = {"deadline_h": result.deadline_h, "layouts_fitting": len(result.table),
                          "layouts_refused": result.refused,
                          "best": {k: json_safe(v) for k, v in (result.best or {}).items()} or None}
    return out


def plot_scaling(table: pd.DataFrame, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["fits"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    if not ok.empty:
        left.plot(ok["gpus"], ok["time_h"], "o-", label="predicted")
        left.plot(ok["gpus"], ok["ideal_time_h"], "--", c="0.5", label="ideal scaling")
        right.plot(ok["gpus"], ok["cost_usd"], "o-", c="tab:green", label="predicted")
        right.axhline(ok["cost_usd"].iloc[0], ls="--", c="0.5", label="ideal scaling")
    for ax, ylabel in ((left, "time to train (hours)"), (right, "cost ($)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("GPUs")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    left.set_yscale("log")
    fig.suptitle(f"{title}: time and cost against GPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_memory(table: pd.DataFrame, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["fits"]]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bottom = None
    labels = [str(n) for n in ok["gpus"]]
    for part in ("weights_gb", "gradients_gb", "optimizer_gb", "activations_gb", "runtime_gb"):
        ax.bar(labels, ok[part], bottom=bottom, label=part.removesuffix("_gb"))
        bottom = ok[part].to_numpy() if bottom is None else bottom + ok[part].to_numpy()
    if not ok.empty:
        ax.axhline(ok["gpu_memory_gb"].iloc[0], ls="--", c="k", lw=0.8, label="GPU memory")
    ax.set_xlabel("GPUs")
    ax.set_ylabel("GB per GPU")
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: memory per GPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
