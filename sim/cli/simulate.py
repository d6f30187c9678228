"""`capsim simulate SCENARIO.yaml [--seed N] [--replications R] [--out DIR]`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("simulate", help="simulate a scenario and print its summary table",
                       description="Simulate a scenario YAML; print a summary table; optionally write the run.")
    p.add_argument("scenario", help="scenario YAML file (see docs/scenario.md)")
    p.add_argument("--seed", type=int, default=None, help="root seed (default: the scenario's run.seed)")
    p.add_argument("--replications", type=int, default=None, help="override run.replications")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario key, e.g. --set fleet.replicas=4 (repeatable)")
    p.add_argument("--out", default=None, help="write summary.json, requests.parquet, timeseries.parquet here")
    p.add_argument("--quiet", action="store_true", help="no table")
    p.set_defaults(func=main)


def parse_sets(pairs: list[str]) -> dict[str, object]:
    import yaml

    from sim.errors import ScenarioError

    updates: dict[str, object] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ScenarioError(f"--set {pair!r}: expected KEY=VALUE, e.g. fleet.replicas=4")
        key, value = pair.split("=", 1)
        updates[key.strip()] = yaml.safe_load(value)
    return updates


def main(args) -> int:
    import sim
    from sim.results.output import print_summary, write_run

    scenario = sim.load_scenario(args.scenario)
    if args.set:
        scenario = scenario.with_updates(parse_sets(args.set))
    if args.replications is not None and args.replications < 1:
        raise sim.ScenarioError(f"--replications = {args.replications}: must be ≥ 1")
    result = sim.run(scenario, seed=args.seed, replications=args.replications, progress=True)
    if not args.quiet:
        print_summary(result)
    if args.out:
        out = write_run(result, args.out)
        print(f"wrote {out}/ (summary.json, scenario.yaml, requests, batches, timeseries and replicas .parquet)")
    return 0
