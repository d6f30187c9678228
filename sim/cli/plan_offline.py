"""`capsim plan-offline SCENARIO.yaml`: the cheapest fleet that finishes an offline job by its deadline."""

from __future__ import annotations

EXAMPLES = """examples:
  capsim plan-offline examples/architectures/offline_rescoring.yaml
  capsim plan-offline s.yaml --deadline-s 3600 --gpus L4,A10G,H100-SXM --batch-sizes 64,128 --capacity-types spot

Per GPU × batch size × capacity type (on_demand, spot), the fewest replicas whose makespan meets the
deadline (the upper 95% bound over replications), searched from the closed form; ranked by the job's cost.
Writes to --out: candidates.parquet (every fleet simulated), fleets.parquet (the fewest replicas per
configuration, ranked), recommended.yaml (the cheapest fleet meeting the deadline) and a checkpoint
directory that makes a rerun resume. Roofline estimates for catalog GPUs without a profile are labelled."""


def register(sub) -> None:
    import argparse

    p = sub.add_parser("plan-offline", help="search GPU type, replicas, batch size and spot for the cheapest fleet "
                       "meeting an offline job's deadline",
                       description="Offline batch-job planner: the cheapest fleet whose makespan (upper 95%% bound "
                       "over replications) meets offline.deadline_s.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="scenario YAML file with an offline section")
    p.add_argument("--deadline-s", type=float, default=None, help="deadline, s (default: offline.deadline_s)")
    p.add_argument("--gpus", default=None, help="comma-separated catalog GPUs to consider (default: all)")
    p.add_argument("--no-estimates", action="store_true", help="only GPUs with a shipped profile of the model")
    p.add_argument("--batch-sizes", default=None, help="batch sizes to try, e.g. 64,128 (default: 32,64,128,256 up "
                   "to each profile's largest)")
    p.add_argument("--capacity-types", default="on_demand,spot", help="on_demand, spot or both (default: %(default)s)")
    p.add_argument("--replications", type=int, default=None, help="replications per fleet (default: run.replications)")
    p.add_argument("--seed", type=int, default=None, help="root seed (default: run.seed)")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="local process pool (default) or Ray")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start one on loopback)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores; 1 runs in this "
                   "process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", default=None, help="output directory (default: plan-offline-<scenario name>); missing, "
                   "empty or an earlier plan's (resumed), unless --force")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out that is not a plan's, or start "
                   "an earlier plan over (its checkpoint discarded)")
    p.set_defaults(func=main)


def main(args) -> int:
    import sim
    from sim.cli.plan import prepared, searched
    from sim.errors import ScenarioError, bad_value
    from sim.experiments.sweep import check_runs
    from sim.planner.candidates import gpu_candidates
    from sim.planner.offline import CAPACITY_TYPES, DEFAULT_BATCH_SIZES, plan_offline
    from sim.planner.offline_report import is_plan_folder, print_offline_plan, write_offline_plan
    from sim.results.files import check_folder
    from sim.scenario.inputs import files_given
    from sim.scenario.keys import updated, with_run_flags

    scenario = with_run_flags(sim.load_scenario(args.scenario), args.seed, args.replications)
    if scenario.offline is None:
        raise ScenarioError(f"{args.scenario}: plan-offline plans an offline job (a scenario with an offline "
                            "section); `capsim plan` plans online serving")
    if args.deadline_s is not None:
        scenario = updated(scenario, {"offline.deadline_s": args.deadline_s}, "--deadline-s")
    batch = _numbers(args.batch_sizes, "--batch-sizes") if args.batch_sizes else list(DEFAULT_BATCH_SIZES)
    kinds = [k.strip() for k in args.capacity_types.split(",") if k.strip()]
    if not kinds or any(k not in CAPACITY_TYPES for k in kinds):
        raise ScenarioError(bad_value("--capacity-types", args.capacity_types, "a comma-separated list of "
                                      "on_demand and spot"))
    for b in batch:
        updated(scenario, {"batching.max_batch_size": b}, "--batch-sizes")
    check_runs([len(batch), len(kinds)], scenario.run.replications, "the plan's space (--batch-sizes × "
               "--capacity-types)")
    out = check_folder(args.out or f"plan-offline-{scenario.name}", force=args.force, replaceable=is_plan_folder,
                       inputs=files_given(args.scenario, scenario))
    gpus = [g.strip().lower() for g in args.gpus.split(",")] if args.gpus else None
    candidates = prepared(out, lambda: gpu_candidates(scenario, gpus, not args.no_estimates, out / "profiles"))
    result = searched(args, out, lambda executor: plan_offline(
        scenario, candidates, sorted(set(batch)), kinds, replications=scenario.run.replications,
        seed=scenario.run.seed, executor=executor, checkpoint_dir=out / "checkpoint", progress=not args.no_progress))
    print_offline_plan(result, scenario)
    write_offline_plan(result, scenario, out, force=args.force)
    return 0


def _numbers(text: str, flag: str) -> list[int]:
    from sim.errors import ScenarioError, bad_value

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ScenarioError(bad_value(flag, text, "a comma-separated list of integers ≥ 1"))
    return values
