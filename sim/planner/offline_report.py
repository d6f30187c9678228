"""An offline plan for people: the fleets in the terminal, and the files of its output folder (every fleet
simulated and the fewest replicas per configuration as Parquet, the recommended scenario). The folder also
holds the plan's working state, ``checkpoint/`` and ``profiles/``, kept when the results are replaced
(atomically, ``sim.results.files``)."""

from __future__ import annotations

from pathlib import Path

from sim.results.files import writing_folder
from sim.scenario.keys import updated
from sim.scenario.load import dump_scenario

PLAN_FILES = ("candidates.parquet", "fleets.parquet", "recommended.yaml")
PLAN_STATE = ("checkpoint", "profiles")


def is_plan_folder(path: Path) -> bool:
    """True when ``path`` holds nothing but an offline plan's files (a rerun resumes from it)."""
    return all(entry.name in (*PLAN_FILES, *PLAN_STATE) for entry in path.iterdir())


def print_offline_plan(result, scenario, console=None, rows: int = 15) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    off = scenario.offline
    table = Table(title=f"{scenario.name}: {off.job_items:,} items by {off.deadline_s:,.0f} s (makespan: upper 95% "
                  "bound)", header_style="bold")
    for col in ("#", "GPU", "batch", "capacity", "replicas", "makespan (s)", "$ per job", "GPU-h", "verdict"):
        table.add_column(col, justify="right")
    for _, row in result.fleets.head(rows).iterrows():
        gpu = str(row.get("fleet.gpu") or scenario.fleet.gpu or "as given")
        if row.get("estimate"):
            gpu += " (estimate)"
        verdict = "[green]meets[/]" if row["meets_deadline"] else "[red]misses[/]"
        table.add_row(str(row["rank"]), gpu, str(int(row["batching.max_batch_size"])), str(row["offline.capacity_type"]).replace("_", "-"),
                      str(int(row["fleet.replicas"])), f"{row['makespan_upper_s']:,.1f}", f"{row['cost_usd']:,.2f}",
                      f"{row['gpu_hours']:,.2f}", verdict)
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note[/]: {note}")
    console.print(f"{len(result.table)} fleets simulated; {result.computed} runs, {result.reused} reused from the "
                  "checkpoint")
    best = result.best
    if best is None:
        console.print("[bold red]no fleet met the deadline[/]: widen the space (--gpus, --batch-sizes) or relax it")
    else:
        console.print(f"[bold]recommended[/]: {describe(best)}")


def describe(row) -> str:
    gpu = row.get("fleet.gpu") or "the scenario's device"
    return (f"{int(row['fleet.replicas'])} × {gpu} ({row['offline.capacity_type']}) at batch "
            f"{int(row['batching.max_batch_size'])}: makespan {row['makespan_upper_s']:,.0f} s, ${row['cost_usd']:,.2f} "
            "per job")


def write_offline_plan(result, scenario, out, force: bool = False) -> None:
    """candidates.parquet, fleets.parquet and recommended.yaml under ``out`` (replaced as a whole; the checkpoint
    and profiles kept)."""
    written = ["candidates.parquet", "fleets.parquet"]
    with writing_folder(out, force=force, replaceable=is_plan_folder, keep=PLAN_STATE) as tmp:
        result.table.to_parquet(tmp / "candidates.parquet", index=False)
        result.fleets.to_parquet(tmp / "fleets.parquet", index=False)
        best = result.best
        if best is not None:
            updates = {k: (best[k].item() if hasattr(best[k], "item") else best[k]) for k in result.params
                       if k in best and best[k] is not None}
            header = f"# Recommended by capsim plan-offline: {describe(best)}\n"
            if best.get("estimate"):
                header += "# The service profile is a roofline ESTIMATE: calibrate this GPU before buying.\n"
            (tmp / "recommended.yaml").write_text(header + dump_scenario(updated(scenario, updates, "recommended")))
            written.append("recommended.yaml")
    print(f"wrote {out}/ " + ", ".join(written))
