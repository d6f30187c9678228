"""A plan for people: the ranked table in the terminal, and the files written to its output folder
(candidates and Pareto fronts as Parquet, the Pareto plot, the recommended scenario).

The folder also holds the plan's working state, ``checkpoint/`` (finished runs, for resuming) and
``profiles/`` (roofline estimates the candidates use); the result files are written atomically around
them (``sim.results.files``): a reader sees the previous plan's results or the new ones, never a mix."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from sim.planner.search import objectives, pareto_front
from sim.results.files import writing_file, writing_folder
from sim.scenario.keys import updated
from sim.scenario.load import dump_scenario

TABLE_ROWS = 15
# What a plan folder holds: the results, then the working state carried over from one run to the next.
PLAN_FILES = ("candidates.parquet", "pareto.parquet", "pareto.png", "recommended.yaml", "bisection.parquet")
PLAN_STATE = ("checkpoint", "profiles")
HIDDEN = ("service.profile", "cost.usd_per_replica_hour", "llm.usd_per_gpu_hour")  # params the table leaves out


def is_plan_folder(path: Path) -> bool:
    """True when ``path`` holds nothing but a plan's files (a rerun resumes from it and replaces them)."""
    return all(entry.name in (*PLAN_FILES, *PLAN_STATE) for entry in path.iterdir())


def print_plan(result, scenario, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = result.table
    objs, llm = objectives(scenario), scenario.llm is not None
    slo = ", ".join(f"{o.label} ≤ {o.target_s * 1e3:g} ms" for o in objs)
    table = Table(title=f"{scenario.name}: {result.search} search, {slo} (upper 95% bound)", header_style="bold")
    shown = [p for p in result.params if p not in HIDDEN]
    for col in ["#", *[p.split(".")[-1] for p in shown], *(["GPUs"] if llm else []), "$/hour",
                *[f"{o.label} ms (upper)" for o in objs], "SLO-violation min", "verdict"]:
        table.add_column(col, justify="right")

    def ms(x):
        return "—" if x is None or not math.isfinite(x) else f"{x * 1e3:,.2f}"

    for _, row in t.head(TABLE_ROWS).iterrows():
        cells = [str(row["rank"]), *[label(row, p) for p in shown]]
        verdict = ("[red]unstable[/]" if row["unstable"] else "[green]meets SLO[/]" if row["meets_slo"]
                   else "[yellow]misses SLO[/]")
        cells += [*([f"{row['instances']:g}"] if llm else []), f"{row['cost_per_hour_usd']:,.2f}",
                  *[f"{ms(row.get(o.point))} ({ms(row[o.upper])})" for o in objs],
                  f"{row.get('slo_violation_min', math.nan):,.2f}", verdict]
        table.add_row(*cells)
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note[/]: {note}")
    console.print(f"{len(t)} configurations at full traffic; simulated {result.computed} runs, "
                  f"reused {result.reused} from the checkpoint")
    best = result.best
    if best is None:
        console.print("[bold red]no configuration met the SLO[/]: widen the space (--replicas, --gpus) or relax it")
    else:
        console.print(f"[bold]recommended[/]: {describe(best, result.params)}")


def label(row, key: str) -> str:
    value = row.get(key)
    if key == "fleet.gpu" and isinstance(value, str) and row.get("estimate"):
        return f"{value} (estimate)"
    if key == "batching.max_queue_delay_s" and isinstance(value, float):
        return f"{value * 1e3:g} ms"
    return "—" if value is None else str(value)


def describe(row, params) -> str:
    shown = [p for p in params if p not in HIDDEN]
    gpus = f" ({row['instances']:g} GPUs)" if "gpus_per_replica" in row and "instances" in row else ""
    return ", ".join(f"{p}={label(row, p)}" for p in shown) + f" at ${row['cost_per_hour_usd']:,.2f}/hour{gpus}"


def write_plan(result, scenario, out, force: bool = False) -> None:
    """candidates.parquet, pareto.parquet/.png, recommended.yaml (and bisection.parquet) under ``out``,
    replacing the previous plan's as a whole; ``checkpoint/`` and ``profiles/`` are kept. A folder holding
    anything else is replaced only with ``force``."""
    out = Path(out)
    table = result.table
    fronts = {f"cost_vs_{o.name}": pareto_front(table, o.upper) for o in objectives(scenario)}
    fronts["cost_vs_violation"] = pareto_front(table, "slo_violation_min")  # an llm plan's windows: TTFT and TPOT
    written = ["candidates.parquet", "pareto.parquet", "pareto.png"]
    with writing_folder(out, force=force, replaceable=is_plan_folder, keep=PLAN_STATE) as tmp:
        table.to_parquet(tmp / "candidates.parquet", index=False)
        pd.concat([f.assign(frontier=name) for name, f in fronts.items()], ignore_index=True).to_parquet(
            tmp / "pareto.parquet", index=False)
        plot_pareto(table, fronts, scenario, tmp / "pareto.png")
        best = result.best
        if best is not None:
            updates = {k: _plain(best[k]) for k in result.params if k in best and best[k] is not None}
            recommended = updated(scenario, updates, "recommended")
            header = f"# Recommended by capsim plan ({result.search}): {describe(best, result.params)}\n"
            if best.get("estimate") and scenario.llm is not None:
                header += ("# The iteration times are an ESTIMATE (a roofline, or another GPU's coefficients): "
                           "calibrate this GPU before buying.\n")
            elif best.get("estimate"):
                header += "# The service profile is a roofline ESTIMATE: calibrate this GPU before buying.\n"
            (tmp / "recommended.yaml").write_text(header + dump_scenario(recommended))
            written.append("recommended.yaml")
        if result.bisections is not None:
            result.bisections.reset_index(level=0, names="table").to_parquet(tmp / "bisection.parquet", index=False)
            written.append("bisection.parquet")
    print(f"wrote {out}/ " + ", ".join(written))


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def plot_pareto(table, fronts, scenario, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objs = objectives(scenario)
    panels = {f"cost_vs_{o.name}": (o.upper, 1e3, f"{o.label} upper 95% bound (ms)", o.target_s * 1e3)
              for o in objs}
    panels["cost_vs_violation"] = ("slo_violation_min", 1.0, "minutes of SLO violation", None)
    fig, axes = plt.subplots(1, len(fronts), figsize=(5.5 * len(fronts), 4.2), squeeze=False)
    stable = table[~table["unstable"].astype(bool)]
    for ax, (name, front) in zip(axes[0], fronts.items()):
        metric, scale, ylabel, target = panels[name]
        ok = stable["meets_slo"].astype(bool)
        ax.scatter(stable.loc[~ok, "cost_per_hour_usd"], stable.loc[~ok, metric] * scale, s=14, c="0.7",
                   label="misses SLO")
        ax.scatter(stable.loc[ok, "cost_per_hour_usd"], stable.loc[ok, metric] * scale, s=14, c="tab:blue",
                   label="meets SLO")
        ax.step(front["cost_per_hour_usd"], front[metric] * scale, where="post", c="tab:red", label="Pareto frontier")
        if target is not None:
            ax.axhline(target, ls="--", c="k", lw=0.8, label="SLO")
        shown = (stable[metric] * scale)[lambda v: v > 0]
        log = bool(len(shown)) and shown.max() > 100 * shown.min()  # overloaded fleets' outliers: a log axis
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("cost ($/hour)")
        ax.set_ylabel(ylabel + (", log scale" if log else ""))
        ax.legend(fontsize=8)
    what = " and ".join(o.label for o in objs) if scenario.llm is not None else "latency and vs SLO violation"
    fig.suptitle(f"{scenario.name}: cost vs {what} (unstable configurations left out)")
    fig.tight_layout()
    try:
        with writing_file(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
