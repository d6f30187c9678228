"""`capsim compare A.yaml B.yaml ... [--vary NAME:KEY=VAL,KEY=VAL]`: key metrics side by side.

All scenarios run with the same seed, so they see the same traffic (common random numbers).
"""

from __future__ import annotations

ROWS = (
    ("latency_p50_s", "p50", 1e3, "{:,.1f} ms"),
    ("latency_p99_s", "p99", 1e3, "{:,.1f} ms"),
    ("latency_p99_observed_s", "p99 observed", 1e3, "{:,.1f} ms"),
    ("goodput_share", "within SLO", 100, "{:,.2f} %"),
    ("requests_rejected", "rejected", 1, "{:,.0f}"),
    ("requests_timed_out", "timed out", 1, "{:,.0f}"),
    ("mean_batch_size", "mean batch", 1, "{:,.2f}"),
    ("utilization", "utilisation", 100, "{:,.1f} %"),
    ("replicas_mean", "replicas (mean)", 1, "{:,.2f}"),
    ("cost_per_hour_usd", "cost per hour", 1, "${:,.2f}/h"),
    ("cost_per_million_requests_usd", "cost per 1M req", 1, "${:,.2f}"),
)

def register(sub) -> None:
    p = sub.add_parser("compare", help="run several scenarios (or variants) and print key metrics side by side")
    p.add_argument("scenarios", nargs="+", help="scenario YAML files")
    p.add_argument("--vary", action="append", default=[], metavar="NAME:KEY=VAL[,KEY=VAL]",
                   help="add a variant of the FIRST scenario, e.g. 'headroom:autoscaler.min_replicas=6'")
    p.add_argument("--seed", type=int, default=None, help="one seed for all (default: the first scenario's)")
    p.add_argument("--out", default=None, help="write the table as CSV here (replaced if it exists)")
    p.set_defaults(func=main)


def variants(paths: list[str], vary: list[str]):
    """(label, scenario) pairs: each file, then each --vary variant of the first file."""
    import sim
    from sim.errors import ScenarioError, shown
    from sim.scenario.keys import parse_sets, updated

    out = [(sc.name, sc) for sc in map(sim.load_scenario, paths)]
    base = out[0][1]
    for spec in vary:
        if ":" not in spec:
            raise ScenarioError(f"--vary {shown(spec)}: expected NAME:KEY=VAL[,KEY=VAL], e.g. headroom:fleet.replicas=6")
        name, sets = spec.split(":", 1)
        out.append((name, updated(base, parse_sets([s for s in sets.split(",") if s], "--vary"), "--vary")))
    return out


def compare(pairs, seed: int | None) -> list[tuple[str, dict]]:
    """(label, summary over its replications) per scenario, all under one seed (the first scenario's by
    default), through the sweep's loop over many scenarios."""
    from sim.experiments.sweep import aggregate, run_scenarios

    seed = pairs[0][1].run.seed if seed is None else seed
    result = run_scenarios([({"variant": label}, sc) for label, sc in pairs], ["variant"], seed=seed, progress=False)
    rows = aggregate(result.records, ["variant"]).to_dict("records")
    return [(row["variant"], row) for row in rows]


def main(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from sim.results.files import check_file, writing_file
    from sim.results.output import LLM_TABLE_ROWS, class_rows, fmt
    from sim.scenario.keys import with_run_flags

    pairs = variants(args.scenarios, args.vary)
    if args.seed is not None:
        with_run_flags(pairs[0][1], seed=args.seed)  # checked as run.seed is
    if args.out:
        check_file(args.out)
    results = compare(pairs, args.seed)
    table = Table(title="capsim compare (same seed, same traffic)")
    table.add_column("metric")
    for label, _ in results:
        table.add_column(label, justify="right")
    llm = any("ttft_p50_s" in s for _, s in results)  # token-level runs: the simulate table's LLM rows
    classes = [sc for _, sc in pairs if getattr(sc, "llm", None) is not None and sc.workload.classes]
    extra = class_rows(classes[0].workload.classes, classes[0].llm.slo.percentile) if classes else ()
    for key, label, scale, pattern in (LLM_TABLE_ROWS + extra) if llm else ROWS:
        table.add_row(label, *[fmt(s, key, scale, pattern) if key in s else "—" for _, s in results])
    table.add_row("SLO", *["met" if s.get("slo_met") else "missed" for _, s in results])
    table.add_row("stable", *["no" if s.get("unstable") else "yes" for _, s in results])
    Console().print(table)
    if args.out:
        import pandas as pd

        with writing_file(args.out) as tmp:
            pd.DataFrame([s for _, s in results]).to_csv(tmp, index=False)
        print(f"wrote {args.out}")
    return 0
