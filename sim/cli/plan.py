"""`capsim plan SCENARIO.yaml --slo-p99-ms X`: the cheapest configuration meeting a latency SLO."""

from __future__ import annotations

EXAMPLES = """examples:
  capsim plan examples/fraud_mlp.yaml --slo-p99-ms 10 --search bisect --replications 3
  capsim plan examples/image_classifier.yaml --slo-p99-ms 50 --gpus H100-SXM,L4,A10G --out plan-img
  capsim plan s.yaml --param autoscaler.target_utilization=0.5,0.7 --executor ray

Writes to --out: candidates.parquet (every configuration simulated at full traffic, ranked),
pareto.parquet and pareto.png (cost vs p99 upper bound; cost vs minutes of SLO violation),
recommended.yaml (the cheapest configuration meeting the SLO), and a checkpoint directory that
makes a rerun of the same command resume."""

TABLE_ROWS = 15


def register(sub) -> None:
    import argparse

    from sim.cli.sweep import add_run_options

    p = sub.add_parser("plan", help="search GPU type, batching and replicas for the cheapest config meeting an SLO",
                       description="Capacity planner: the cheapest configuration whose p99 (upper 95%% bound "
                       "over replications) meets the SLO on the scenario's traffic.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--slo-p99-ms", type=float, default=None,
                   help="p99 latency objective, ms (default: the scenario's slo section)")
    p.add_argument("--search", choices=("grid", "bisect", "optuna"), default="bisect",
                   help="bisect: per-replica rate search, Vidur-style (default); grid: every combination; "
                        "optuna: TPE (needs optuna)")
    p.add_argument("--gpus", default=None, help="comma-separated catalog GPUs to consider (default: all)")
    p.add_argument("--no-estimates", action="store_true", help="only GPUs with a shipped profile of the model")
    p.add_argument("--batch-sizes", default=None,
                   help="max batch sizes to try, e.g. 1,8,32 (default: 1,4,8,16,32,64 up to the profile's largest)")
    p.add_argument("--queue-delays-ms", default=None, help="max queue delays to try, ms (default: 0,1,2,5)")
    p.add_argument("--replicas", default=None, help="replica counts for grid/optuna, e.g. 2..12 "
                   "(default: from the capacity needed)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUES",
                   help="another dotted key to search, e.g. autoscaler.min_replicas=1..3 (repeatable)")
    p.add_argument("--trials", type=int, default=40, help="optuna trials (default: %(default)s)")
    add_run_options(p)
    p.add_argument("--out", default=None, help="output directory (default: plan-<scenario name>)")
    p.set_defaults(func=main)


def main(args) -> int:
    from pathlib import Path

    import sim
    from sim.experiments.executors import close_executor, make_executor
    from sim.planner.search import Runner, plan

    scenario = sim.load_scenario(args.scenario)
    if args.slo_p99_ms is not None:
        if not args.slo_p99_ms > 0:
            raise sim.ScenarioError(f"--slo-p99-ms = {args.slo_p99_ms}: must be > 0")
        scenario = scenario.with_updates({"slo.latency_s": args.slo_p99_ms / 1e3, "slo.percentile": 99.0})
    out = Path(args.out or f"plan-{scenario.name}")
    space = build_space(scenario, args, out)
    reps = scenario.run.replications if args.replications is None else args.replications
    if reps < 1:
        raise sim.ScenarioError(f"--replications = {reps}: must be ≥ 1")
    executor = make_executor(args.executor, args.workers, args.ray_address)
    runner = Runner(scenario, reps, scenario.run.seed if args.seed is None else args.seed, executor,
                    out / "checkpoint", not args.no_progress, args.window_s)
    try:
        result = plan(scenario, space, runner, args.search, args.trials)
    finally:
        close_executor(executor)
    print_plan(result, scenario)
    write_plan(result, scenario, out)
    return 0


def build_space(scenario, args, out):
    """The search space from the command line (values checked against the scenario first)."""
    import yaml

    from sim.errors import ScenarioError
    from sim.experiments.sweep import configure, parse_param
    from sim.planner.search import (
        DEFAULT_BATCH_SIZES,
        DEFAULT_QUEUE_DELAYS_S,
        Space,
        autoscaler_params,
        gpu_candidates,
    )

    def numbers(text: str, what: str, kind) -> list:
        try:
            values = [kind(yaml.safe_load(v)) for v in text.split(",") if v.strip()]
        except (TypeError, ValueError):
            values = []
        if not values or any(v < 0 for v in values):
            raise ScenarioError(f"{what} = {text!r}: a comma-separated list of numbers ≥ 0")
        return values

    gpus = [g.strip().lower() for g in args.gpus.split(",")] if args.gpus else None
    candidates = gpu_candidates(scenario, gpus, not args.no_estimates, out / "profiles")
    batch = numbers(args.batch_sizes, "--batch-sizes", int) if args.batch_sizes else list(DEFAULT_BATCH_SIZES)
    delays = ([d / 1e3 for d in numbers(args.queue_delays_ms, "--queue-delays-ms", float)]
              if args.queue_delays_ms else [d for d in DEFAULT_QUEUE_DELAYS_S if d < scenario.slo.latency_s / 4])
    replicas = parse_param(f"fleet.replicas={args.replicas}")[1] if args.replicas else None
    extra = autoscaler_params(scenario) if not args.param else {}
    for spec in args.param:
        key, values = parse_param(spec)
        extra[key] = values
    for key, values in {"batching.max_batch_size": batch, "batching.max_queue_delay_s": delays,
                        "fleet.replicas": replicas or [1], **extra}.items():
        for value in values:
            configure(scenario, {key: value})
    return Space(candidates, sorted(set(batch)), sorted(set(delays)), replicas, extra)


def print_plan(result, scenario, console=None) -> None:
    import math

    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = result.table
    slo = f"p{scenario.slo.percentile:g} ≤ {scenario.slo.latency_s * 1e3:g} ms"
    table = Table(title=f"{scenario.name}: {result.search} search, {slo} (upper 95% bound)", header_style="bold")
    shown = [p for p in result.params if p not in ("service.profile", "cost.usd_per_replica_hour")]
    for col in ["#", *[p.split(".")[-1] for p in shown], "$/hour", f"p{scenario.slo.percentile:g} ms (upper)",
                "SLO-violation min", "verdict"]:
        table.add_column(col, justify="right")

    def ms(x):
        return "—" if x is None or not math.isfinite(x) else f"{x * 1e3:,.2f}"

    for _, row in t.head(TABLE_ROWS).iterrows():
        cells = [str(row["rank"]), *[label(row, p) for p in shown]]
        verdict = ("[red]unstable[/]" if row["unstable"] else "[green]meets SLO[/]" if row["meets_slo"]
                   else "[yellow]misses SLO[/]")
        cells += [f"{row['cost_per_hour_usd']:,.2f}", f"{ms(row.get(result_key(scenario)))} ({ms(row['slo_upper_s'])})",
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


def result_key(scenario) -> str:
    from sim.planner.search import slo_key

    return slo_key(scenario)


def label(row, key: str) -> str:
    value = row.get(key)
    if key == "fleet.gpu" and isinstance(value, str) and row.get("estimate"):
        return f"{value} (estimate)"
    if key == "batching.max_queue_delay_s" and isinstance(value, float):
        return f"{value * 1e3:g} ms"
    return "—" if value is None else str(value)


def describe(row, params) -> str:
    shown = [p for p in params if p not in ("service.profile", "cost.usd_per_replica_hour")]
    return ", ".join(f"{p}={label(row, p)}" for p in shown) + f" at ${row['cost_per_hour_usd']:,.2f}/hour"


def write_plan(result, scenario, out) -> None:
    """candidates.parquet, pareto.parquet/.png and recommended.yaml under ``out``."""
    import pandas as pd

    from sim.planner.search import pareto_front
    from sim.scenario.load import dump_scenario

    out.mkdir(parents=True, exist_ok=True)
    table = result.table
    table.to_parquet(out / "candidates.parquet", index=False)
    fronts = {"cost_vs_p99": pareto_front(table, "slo_upper_s"),
              "cost_vs_violation": pareto_front(table, "slo_violation_min")}
    pd.concat([f.assign(frontier=name) for name, f in fronts.items()], ignore_index=True).to_parquet(
        out / "pareto.parquet", index=False)
    plot_pareto(table, fronts, scenario, out / "pareto.png")
    written = ["candidates.parquet", "pareto.parquet", "pareto.png"]
    best = result.best
    if best is not None:
        updates = {k: _plain(best[k]) for k in result.params if k in best and best[k] is not None}
        recommended = scenario.with_updates(updates)
        header = f"# Recommended by capsim plan ({result.search}): {describe(best, result.params)}\n"
        if best.get("estimate"):
            header += "# The service profile is a roofline ESTIMATE: calibrate this GPU before buying.\n"
        (out / "recommended.yaml").write_text(header + dump_scenario(recommended))
        written.append("recommended.yaml")
    if result.bisections is not None:
        result.bisections.reset_index(level=0, names="table").to_parquet(out / "bisection.parquet", index=False)
        written.append("bisection.parquet")
    print(f"wrote {out}/ " + ", ".join(written))


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def plot_pareto(table, fronts, scenario, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    stable = table[~table["unstable"].astype(bool)]
    for ax, (name, front), (metric, scale, ylabel) in zip(
            axes, fronts.items(), [("slo_upper_s", 1e3, f"p{scenario.slo.percentile:g} upper 95% bound (ms)"),
                                   ("slo_violation_min", 1.0, "minutes of SLO violation")]):
        ok = stable["meets_slo"].astype(bool)
        ax.scatter(stable.loc[~ok, "cost_per_hour_usd"], stable.loc[~ok, metric] * scale, s=14, c="0.7",
                   label="misses SLO")
        ax.scatter(stable.loc[ok, "cost_per_hour_usd"], stable.loc[ok, metric] * scale, s=14, c="tab:blue",
                   label="meets SLO")
        ax.step(front["cost_per_hour_usd"], front[metric] * scale, where="post", c="tab:red", label="Pareto frontier")
        if name == "cost_vs_p99":
            ax.axhline(scenario.slo.latency_s * 1e3, ls="--", c="k", lw=0.8, label="SLO")
        ax.set_xlabel("cost ($/hour)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(f"{scenario.name}: cost vs latency and vs SLO violation (unstable configurations left out)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
