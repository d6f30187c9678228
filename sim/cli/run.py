"""`capsim run`: the main job on the built-in default (the fraud-scoring example)."""

from __future__ import annotations

from sim.scenario.examples import DEFAULT_EXAMPLE

DEFAULT_OUT = "runs/default"


def register(sub) -> None:
    p = sub.add_parser("run", help="run the built-in default scenario and print its table",
                       description="Run a scenario (default: the built-in example) and write its run folder. "
                       f"Each `capsim run` replaces the run folder in {DEFAULT_OUT}; a --out you name follows the "
                       "rule of `capsim simulate`: it must be missing or empty, unless --force.")
    p.add_argument("--scenario", default=DEFAULT_EXAMPLE,
                   help="scenario file or example name to run (default: the %(default)s example)")
    p.add_argument("--out", default=None, help=f"run directory to write (default: {DEFAULT_OUT}, replaced by each "
                   "run as long as it holds only a run folder's files)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(func=main)


def main(args) -> int:
    import sim
    from sim.results.files import check_folder
    from sim.results.output import is_run_folder, print_summary, write_run
    from sim.scenario.inputs import files_given

    scenario = sim.load_scenario(args.scenario)
    out = args.out or DEFAULT_OUT
    own = is_run_folder if args.out is None else None  # the default folder is this command's own
    check_folder(out, force=args.force, replaceable=own, inputs=files_given(args.scenario, scenario))
    result = sim.run(scenario, progress=True)
    print_summary(result)
    write_run(result, out, force=args.force, replaceable=own)
    print(f"wrote {out}/")
    return 0
