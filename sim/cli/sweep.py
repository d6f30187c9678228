"""`capsim sweep SCENARIO.yaml --param KEY=VALUES ... --out sweep.parquet`: a resumable grid sweep."""

from __future__ import annotations

EXAMPLES = """examples:
  capsim sweep examples/fraud_mlp.yaml --param batching.max_batch_size=1,8,32 --param fleet.replicas=2..8 \\
      --replications 3 --out sweep.parquet
  capsim sweep s.yaml --param batching.max_queue_delay_s=0..0.004:0.001 --executor ray --out s.parquet

Completed runs are kept in a checkpoint directory (default: OUT with suffix .checkpoint); run the same
command again after an interruption and only the missing runs are simulated. A run is reused only when
the scenario, the seed and the contents of every file it reads (profile, trace, manifest) are unchanged;
--force discards the checkpoint and simulates everything again. OUT is replaced (atomically) when the
sweep completes. A grid is refused before it starts when points × replications exceeds {max_runs:,} runs."""


def register(sub) -> None:
    import argparse

    from sim.experiments.sweep import MAX_RUNS

    p = sub.add_parser("sweep", help="simulate a grid of configurations × replications into one Parquet file",
                       description="Grid sweep over dotted scenario keys, with replications, resumable.",
                       epilog=EXAMPLES.format(max_runs=MAX_RUNS), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUES", required=True,
                   help="a dotted key and its values: V1,V2,... or A..B or A..B:STEP (repeatable)")
    add_run_options(p)
    p.add_argument("--out", required=True, help="Parquet file: one row per point × replication (replaced if it exists)")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: OUT.checkpoint)")
    p.add_argument("--force", action="store_true", help="discard the checkpoint's runs and simulate every run again")
    p.set_defaults(func=main)


def add_run_options(p) -> None:
    """Options shared by `sweep` and `plan`."""
    p.add_argument("--replications", type=int, default=None, help="replications per point (default: run.replications)")
    p.add_argument("--seed", type=int, default=None, help="root seed (default: run.seed)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local process pool (default) or Ray")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start one on loopback)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: all cores; 1 runs in this process)")
    p.add_argument("--window-s", type=float, default=None,
                   help="window for SLO-violation minutes (default: 60 s or a tenth of the measured period)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args) -> int:

    import sim
    from sim.errors import ScenarioError
    from sim.experiments.executors import close_executor, make_executor
    from sim.experiments.sweep import check_runs, discard_checkpoint, run_sweep, write_rows
    from sim.scenario.keys import parse_param, updated, with_run_flags

    scenario = with_run_flags(sim.load_scenario(args.scenario), args.seed, args.replications)
    params: dict[str, list] = {}
    for spec in args.param:
        key, values = parse_param(spec)
        if key in params:
            raise ScenarioError(f"--param {key}: given twice")
        params[key] = values
    check_runs([len(v) for v in params.values()], scenario.run.replications)
    for key, values in params.items():
        for value in values:  # each value on its own first: errors before any worker starts
            updated(scenario, {key: value}, "--param")
    if args.workers is not None and args.workers < 1:
        raise ScenarioError(f"--workers = {args.workers}: must be ≥ 1")
    out, checkpoint = check_outputs(args)
    if args.force:
        discard_checkpoint(checkpoint)
    executor = make_executor(args.executor, args.workers, args.ray_address)
    try:
        result = run_sweep(scenario, params, executor=executor,
                           checkpoint_dir=checkpoint, progress=not args.no_progress, window_s=args.window_s)
    finally:
        close_executor(executor)
    write_rows(result, out)
    points = result.rows["point"].nunique()
    print(f"{points} points × {len(result.rows) // max(points, 1)} replications: simulated {result.computed}, "
          f"reused {result.reused} from {checkpoint}/")
    print(f"wrote {out} ({len(result.rows)} rows)")
    return 0


def check_outputs(args):
    """(--out, --checkpoint) checked before anything runs: a file path, and a folder that is missing,
    empty or a checkpoint."""
    from pathlib import Path

    from sim.experiments.sweep import is_checkpoint
    from sim.results.files import OutputError, bad_path, check_file, check_folder

    out = check_file(args.out, "--out")
    flag = "--checkpoint" if args.checkpoint else "--out"
    checkpoint = Path(args.checkpoint) if args.checkpoint else out.with_suffix(".checkpoint")
    if checkpoint.absolute() == out.absolute():
        raise OutputError(bad_path(flag, out, "the Parquet file and its checkpoint folder "
                                    "(OUT with suffix .checkpoint) need different paths; give --checkpoint DIR"))
    check_folder(checkpoint, flag, replaceable=is_checkpoint,
                 refusal="it holds files that are not a sweep checkpoint's; give another --checkpoint DIR")
    return out, checkpoint
