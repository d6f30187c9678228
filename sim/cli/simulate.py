"""`capsim simulate SCENARIO.yaml [--seed N] [--replications R] [--out DIR [--force]]`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("simulate", help="simulate a scenario and print its summary table",
                       description="Simulate a scenario YAML; print a summary table; optionally write the run.")
    p.add_argument("scenario", help="scenario YAML file or example name (see docs/scenario.md, capsim examples)")
    p.add_argument("--seed", type=int, default=None, help="root seed (default: the scenario's run.seed)")
    p.add_argument("--replications", type=int, default=None, help="override run.replications")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario key, e.g. --set fleet.replicas=4 (repeatable)")
    p.add_argument("--out", default=None, help="write the run folder here (summary.json, scenario.yaml, requests, "
                   "batches, timeseries and replicas .parquet); a folder that exists must be empty, unless --force")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder (as a whole, once the "
                   "new run is complete)")
    p.add_argument("--quiet", action="store_true", help="no table")
    p.set_defaults(func=main)


def main(args) -> int:
    import sim
    from sim.results.files import check_folder
    from sim.results.output import print_summary, write_run
    from sim.scenario.inputs import files_given
    from sim.scenario.keys import parse_sets, updated, with_run_flags

    scenario = sim.load_scenario(args.scenario)
    if args.set:
        scenario = updated(scenario, parse_sets(args.set))
    scenario = with_run_flags(scenario, args.seed, args.replications)
    if args.out:
        check_folder(args.out, force=args.force, inputs=files_given(args.scenario, scenario))
    result = sim.run(scenario, progress=True)
    if not args.quiet:
        print_summary(result)
    if args.out:
        out = write_run(result, args.out, force=args.force)
        print(f"wrote {out}/ (summary.json, scenario.yaml, requests, batches, timeseries and replicas .parquet)")
    return 0
