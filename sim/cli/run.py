"""`capsim run`: the main job on the built-in default (the fraud-scoring example)."""

from __future__ import annotations

from sim.scenario.examples import DEFAULT_EXAMPLE


def register(sub) -> None:
    p = sub.add_parser("run", help="run the built-in default scenario and print its table")
    p.add_argument("--scenario", default=DEFAULT_EXAMPLE,
                   help="scenario file or example name to run (default: the %(default)s example)")
    p.add_argument("--out", default="runs/default", help="run directory to write (default: %(default)s)")
    p.set_defaults(func=main)


def main(args) -> int:
    import sim
    from sim.results.output import print_summary, write_run

    result = sim.run(sim.load_scenario(args.scenario), progress=True)
    print_summary(result)
    out = write_run(result, args.out)
    print(f"wrote {out}/")
    return 0
