"""`capsim plan SCENARIO.yaml --slo-p99-ms X`: the cheapest configuration meeting a latency SLO."""

from __future__ import annotations

EXAMPLES = """examples:
  capsim plan examples/fraud_mlp.yaml --slo-p99-ms 10 --search bisect --replications 3
  capsim plan examples/image_classifier.yaml --slo-p99-ms 50 --gpus H100-SXM,L4,A10G --out plan-img
  capsim plan s.yaml --param autoscaler.target_utilization=0.5,0.7 --executor ray
  capsim plan llm/chat_llama3_8b --tensor-parallel 1,2 --max-num-seqs 64,256    # an llm scenario: TTFT/TPOT

Writes to --out: candidates.parquet (every configuration simulated at full traffic, ranked),
pareto.parquet and pareto.png (cost vs p99 upper bound; cost vs minutes of SLO violation),
recommended.yaml (the cheapest configuration meeting the SLO), and a checkpoint directory that
makes a rerun of the same command resume (a run is reused only when the scenario and the contents of
the files it reads are unchanged). A rerun replaces the results as a whole; --out holding anything
but a plan's files is refused unless --force (which starts over: the checkpoint is discarded). The space
(configurations × replica counts × replications) may hold at most {max_runs:,} runs."""



def register(sub) -> None:
    import argparse

    from sim.cli.plan_llm import add_llm_options
    from sim.cli.sweep import add_run_options
    from sim.experiments.sweep import MAX_RUNS

    p = sub.add_parser("plan", help="search GPU type, batching and replicas for the cheapest config meeting an SLO",
                       description="Capacity planner: the cheapest configuration whose p99 (upper 95%% bound "
                       "over replications) meets the SLO on the scenario's traffic; for an llm scenario, whose TTFT "
                       "and TPOT meet llm.slo (GPU type × tensor parallel × scheduler knobs × replicas).",
                       epilog=EXAMPLES.format(max_runs=MAX_RUNS), formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--spare", type=int, default=0, metavar="K",
                   help="N+k sizing: judge each fleet with K of its replicas down (failed or restarting) and price "
                        "it with them: the cheapest fleet that keeps the SLO with K replicas down (default: 0)")
    add_llm_options(p)
    add_run_options(p)
    p.add_argument("--out", default=None, help="output directory (default: plan-<scenario name>); missing, empty "
                   "or an earlier plan's (resumed), unless --force")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out that is not a plan's, or start an "
                   "earlier plan over (its checkpoint discarded)")
    p.set_defaults(func=main)


def main(args) -> int:
    import sim
    from sim.cli.plan_llm import build_llm_space, check_flags, with_llm_slo
    from sim.planner.report import is_plan_folder, print_plan, write_plan
    from sim.planner.search import Evaluator, plan
    from sim.results.files import check_folder
    from sim.scenario.inputs import files_given
    from sim.scenario.keys import updated, with_run_flags

    scenario = with_run_flags(sim.load_scenario(args.scenario), args.seed, args.replications)
    check_flags(scenario, args)  # an llm scenario: TTFT/TPOT, TP and scheduler flags (sim/cli/plan_llm.py)
    if scenario.llm is not None:
        scenario = with_llm_slo(scenario, args)
    if scenario.offline is not None or scenario.streaming is not None:  # sim/architectures/
        raise sim.ScenarioError(f"{args.scenario}: capsim plan searches online serving; plan an offline job with "
                                "capsim plan-offline, and compare stream fleets with capsim sweep --param "
                                "fleet.replicas=2..8")
    if args.spare < 0:
        raise sim.ScenarioError(f"--spare = {args.spare}: must be ≥ 0 (replicas held down)")
    if args.slo_p99_ms is not None:
        if not args.slo_p99_ms > 0:
            raise sim.ScenarioError(f"--slo-p99-ms = {args.slo_p99_ms}: must be > 0")
        scenario = updated(scenario, {"slo.latency_s": args.slo_p99_ms / 1e3, "slo.percentile": 99.0}, "--slo-p99-ms")
    out = check_folder(args.out or f"plan-{scenario.name}", force=args.force, replaceable=is_plan_folder,
                       inputs=files_given(args.scenario, scenario))
    space = prepared(out, lambda: build_llm_space(scenario, args) if scenario.llm is not None
                     else build_space(scenario, args, out))  # writes roofline estimates to out/profiles
    result = searched(args, out, lambda executor: plan(
        scenario, space, Evaluator(scenario, scenario.run.replications, scenario.run.seed, executor, out / "checkpoint",
                                   not args.no_progress, args.window_s, spare=args.spare), args.search, args.trials))
    print_plan(result, scenario)
    write_plan(result, scenario, out, force=args.force)
    return 0


def prepared(out, build):
    """``build()``, which may write into the plan's folder ``out``; the folder is removed if ``build``
    fails and it did not exist before (a bad --gpus, say, leaves nothing behind)."""
    import shutil

    existed = out.exists()
    try:
        return build()
    except BaseException:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        raise


def searched(args, out, search):
    """``search(executor)`` on the executor the flags name, checkpointed in ``out/checkpoint`` (discarded
    first with --force); the executor is closed however the search ends."""
    from sim.experiments.executors import close_executor, make_executor
    from sim.experiments.sweep import discard_checkpoint

    if args.force:
        discard_checkpoint(out / "checkpoint")
    executor = make_executor(args.executor, args.workers, args.ray_address)
    try:
        return search(executor)
    finally:
        close_executor(executor)


def build_space(scenario, args, out):
    """The search space from the command line (values checked against the scenario first)."""
    import yaml

    from sim.errors import ScenarioError
    from sim.experiments.sweep import check_runs
    from sim.planner.candidates import gpu_candidates
    from sim.planner.search import DEFAULT_BATCH_SIZES, DEFAULT_QUEUE_DELAYS_S, Space, autoscaler_params
    from sim.scenario.keys import parse_param, updated

    def numbers(text: str, what: str, kind) -> list:
        try:
            values = [kind(yaml.safe_load(v)) for v in text.split(",") if v.strip()]
        except (TypeError, ValueError):
            values = []
        if not values or any(v < 0 for v in values):
            raise ScenarioError(f"{what} = {text!r}: a comma-separated list of numbers ≥ 0")
        return values

    gpus = [g.strip().lower() for g in args.gpus.split(",")] if args.gpus else None
    batch = numbers(args.batch_sizes, "--batch-sizes", int) if args.batch_sizes else list(DEFAULT_BATCH_SIZES)
    delays = ([d / 1e3 for d in numbers(args.queue_delays_ms, "--queue-delays-ms", float)]
              if args.queue_delays_ms else [d for d in DEFAULT_QUEUE_DELAYS_S if d < scenario.slo.latency_s / 4])
    replicas = parse_param(f"fleet.replicas={args.replicas}")[1] if args.replicas else None
    extra = autoscaler_params(scenario) if not args.param else {}
    for spec in args.param:
        key, values = parse_param(spec)
        extra[key] = values
    counts = [len(set(batch)), len(set(delays)), len(replicas or [1]), *map(len, extra.values())]
    what = "the plan's space (GPUs × --batch-sizes × --queue-delays-ms × --replicas × --param values)"
    check_runs(counts, scenario.run.replications, what)  # before any file is written
    candidates = gpu_candidates(scenario, gpus, not args.no_estimates, out / "profiles")
    check_runs([len(candidates), *counts], scenario.run.replications, what)
    for key, values in {"batching.max_batch_size": batch, "batching.max_queue_delay_s": delays,
                        "fleet.replicas": replicas or [1], **extra}.items():
        for value in values:
            updated(scenario, {key: value}, "--param")
    return Space(candidates, sorted(set(batch)), sorted(set(delays)), replicas, extra)
