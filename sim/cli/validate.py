"""`capsim validate RUN_DIR... --profile FILE|BUILTIN | --calibrate | --from-run replay|self|others [--out DIR]`: simulation vs a real run."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  capsim validate runs/b8-1500 --calibrate                 # calibrate on this machine first, same threads
  capsim validate runs/b8-* --profile my-cpu-profile.json --out runs/validation
  capsim validate runs/b8-* --from-run replay             # each run's own server speed, moment by moment
  capsim validate runs/b8-* --from-run self               # each run's own service times, at a random phase
  capsim validate runs/b8-* --from-run others             # held out: built from the other runs only
  capsim validate runs/llm-* --profile cpu-decoder-llm.json   # bench-serve --llm runs: TTFT, TPOT, tokens/s
A run directory comes from `capsim bench-serve`. See docs/validation.md.
"""


def register(sub) -> None:
    p = sub.add_parser("validate", help="replay a bench-serve run through the simulator and report the error",
                       description="Replay the arrival times of one or more `capsim bench-serve` runs through "
                                   "the simulator with the same batching and replicas, and report the relative "
                                   "error of latency mean/p50/p90/p99, mean batch size and throughput.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="bench-serve run directories")
    p.add_argument("--profile", metavar="FILE|BUILTIN", help="service-time profile (calibrated on the same "
                   "machine with the run's thread count)")
    p.add_argument("--from-run", choices=("replay", "self", "others"), dest="from_run",
                   help="service times observed in served runs instead of a benchmark (sim/profiles/fromrun.py): "
                        "'replay' = each run's own server speed at each moment, replayed at the same times (tests "
                        "the batching and queueing given the machine); "
                        "'self' = each run's own batch times, idle response and speed level at a random phase; "
                        "'others' = built from the other runs given with the same batching, never the run itself (held out)")
    p.add_argument("--calibrate", action="store_true", help="calibrate the run's model first (capsim calibrate "
                   "in a child process, same device, dtype and threads, the batch sizes the run needs)")
    p.add_argument("--samples", type=int, default=60, help="samples per batch size with --calibrate (default 60)")
    p.add_argument("--replications", type=int, default=5, help="simulated replays per run (default 5)")
    p.add_argument("--seed", type=int, default=0, help="root seed of the simulated service times")
    p.add_argument("--out", metavar="DIR", help="where to write validation.json and the QQ plots "
                   "(default: RUN_DIR/validation for one run, else ./validation); a folder that exists must "
                   "be empty, unless --force")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder (as a whole, once the "
                   "new report is complete)")
    p.add_argument("--no-plot", action="store_true", help="skip the QQ plots")
    p.set_defaults(func=main)


def main(args) -> int:
    from functools import partial

    from rich.console import Console

    from sim.errors import CapsimError
    from sim.results.files import check_folder, writing_folder
    from sim.validation import validate as v

    if sum(map(bool, (args.profile, args.calibrate, args.from_run))) != 1:
        raise CapsimError("give exactly one of --profile FILE|BUILTIN, --calibrate or --from-run replay|self|others")
    if args.replications < 1:
        raise CapsimError(f"--replications = {args.replications}: must be >= 1")
    runs = [v.load_run(r) for r in args.runs]
    given = None
    if args.profile:
        from sim.profiles.profile import resolve_profile_path

        given = resolve_profile_path(args.profile)
    out = Path(args.out) if args.out else (runs[0].path / "validation" if len(runs) == 1 else Path("validation"))
    check_folder(out, force=args.force, inputs=[*(r.path for r in runs), *([given] if given else [])])
    llm_runs = [r for r in runs if r.settings.get("mode") == "llm"]
    if llm_runs:  # capsim bench-serve --llm runs: sim/validation/llm.py
        if len(llm_runs) != len(runs):
            raise CapsimError(f"{llm_runs[0].path} is an LLM run and {next(r for r in runs if r not in llm_runs).path} "
                              "is not; validate them separately")
        from sim.cli.validate_llm import calibrate_for, calibration_key
        from sim.validation import llm as suite

        key_of, calibrate = calibration_key, calibrate_for
        judged, steps = "TTFT and TPOT ", "iteration"
        p50, p99 = suite.TOLERANCES["ttft_p50_s"], suite.TOLERANCES["ttft_p99_s"]
    else:
        from sim.validation.calibrated import calibrate_for, calibration_key

        suite, key_of, judged, steps = v, calibration_key, "", "batch"
        calibrate = partial(calibrate_for, samples=args.samples)
        p50, p99 = v.TOLERANCES["latency_p50_s"], v.TOLERANCES["latency_p99_s"]
    console = Console()
    with writing_folder(out, force=args.force) as work:  # profiles, traces and plots are written as it goes
        records = [suite.validate_run(run, profile, work, args.replications, args.seed, plot=not args.no_plot)
                   for run, profile in zip(runs, replay_profiles(args, runs, given, work, suite.profile_from_run_for,
                                                                 key_of, calibrate))]
        console.print(suite.error_table(records, console.width))
        suite.write_report(records, work)
    report = out / "validation.json"
    summary = suite.overall(records)
    console.print(f"runs within tolerance ({judged}p50 ±{p50:.0%}, p99 ±{p99:.0%}, load ≤ {v.MAX_LOAD:.0%}): "
                  f"{summary['runs_within_tolerance']} of {summary['runs_judged']}")
    if summary["runs_disturbed"]:
        console.print(f"[yellow]{summary['runs_disturbed']} run(s) disturbed by the machine[/] (late load "
                      f"generator or late {steps} starts; see `disturbed` in validation.json): their errors measure "
                      "the machine, not the simulator; rerun on a quiet machine")
    unlike = sorted({(r["server_wait"], r["profile_wait"]) for r in records  # LLM runs record no waiting
                     if "server_wait" in r and r["server_wait"] != r["profile_wait"]})
    for server, measured in unlike:
        console.print(f"[yellow]runs of a server that waits as {server!r} were simulated with a profile measured "
                      f"under {measured!r}[/] (server.wait): its idle response is not the server's; calibrate with "
                      f"`capsim calibrate --wait {server}` (docs/validation.md)")
    console.print(f"wrote {report}")
    return 0


def replay_profiles(args, runs, given: Path | None, work: Path, from_runs, key_of, calibrate):
    """The profile to replay each run with, made in ``work`` as it is needed: ``from_runs(run, runs, how,
    work)`` with --from-run; with --calibrate one ``calibrate(runs sharing a key_of, work)`` per key;
    else the given one. The suite (request-level or LLM) supplies the three functions."""
    calibrated: dict[tuple, Path] = {}
    for run in runs:
        if args.from_run:
            yield from_runs(run, runs, args.from_run, work)
        elif args.calibrate:
            key = key_of(run)
            if key not in calibrated:
                calibrated[key] = calibrate([r for r in runs if key_of(r) == key], work)
            yield calibrated[key]
        else:
            yield given
