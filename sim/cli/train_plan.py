"""`capsim train-plan FILE`: memory fit, step time, time-to-train and cost of a training job; its scaling
over GPU counts; with a deadline, the cheapest configuration meeting it (docs/training.md)."""

from __future__ import annotations

EPILOG = """examples:
  capsim train-plan training/llama_7b                  # a shipped example by name
  capsim train-plan examples/training/llama_7b.yaml --gpus 128 --out runs/llama
  capsim train-plan training/llama_7b_deadline --out runs/plan   # planner mode (deadline_hours)

Writes to --out: summary.json, scaling.parquet, scaling.png (time and cost against GPUs with the
ideal-scaling line), memory.png (memory per GPU) and, in planner mode, candidates.parquet."""


def register(sub) -> None:
    import argparse

    p = sub.add_parser("train-plan", help="training: memory fit, step time, time and cost, scaling, cheapest "
                       "configuration meeting a deadline", description="Estimate a training job from a plan file "
                       "(kind: training): memory per GPU, step time, time to train, GPU-hours and cost, and how "
                       "they scale with GPUs.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", help="training plan YAML file or a shipped example's name (capsim examples)")
    p.add_argument("--gpus", metavar="N", help="override cluster.gpus")
    p.add_argument("--gpu", metavar="KEY", help="override cluster.gpu (a catalog GPU)")
    p.add_argument("--no-search", action="store_true", help="skip planner mode even with deadline_hours")
    p.add_argument("--out", default=None, help="write the results here; a folder that exists must be empty or an "
                   "earlier train-plan's, unless --force")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar in planner mode")
    p.set_defaults(func=main)


def main(args) -> int:
    from rich.console import Console

    from sim.errors import ScenarioError
    from sim.results.files import check_folder
    from sim.training import planner, report
    from sim.training.job import estimate_plan
    from sim.training.scenario import load_training_plan
    from sim.training.setup import build_setup

    plan = load_training_plan(args.plan)
    updates = {}
    if args.gpus is not None:
        if not args.gpus.strip().isdigit() or int(args.gpus) < 1:
            raise ScenarioError(f"--gpus = {args.gpus!r}: an integer ≥ 1")
        updates["gpus"] = int(args.gpus)
    if args.gpu is not None:
        updates["gpu"] = args.gpu
    if updates:
        from sim.training.scenario import training_plan_from_dict

        data = plan.model_dump(mode="json")
        data["cluster"] = {**data["cluster"], **updates}
        plan = training_plan_from_dict(data, plan.base_dir, "--gpus/--gpu")
    if args.out:
        check_folder(args.out, force=args.force, replaceable=report.is_train_plan_folder)
    setup = build_setup(plan)
    console = Console()
    searching = plan.deadline_hours is not None and not args.no_search
    try:
        job = estimate_plan(setup)  # refuses, with the numbers and what would fit, when it does not fit
        report.print_job(job, setup, console)
    except ScenarioError as exc:
        if not searching:
            raise
        job = None
        console.print(f"[yellow]note[/]: the plan's own layout does not run: {exc}")
    scaling = planner.points_table(planner.scaling(setup))
    report.print_scaling(scaling, console)
    result = None
    if searching:
        result = _search(setup, plan.deadline_hours, not args.no_progress, console)
        report.print_search(result, console)
    if args.out:
        written = report.write_outputs(args.out, job, scaling, result, plan.name, force=args.force)
        print(f"wrote {args.out}/ " + ", ".join(written))
    return 0


def _search(setup, deadline_h, progress, console):
    from sim.training import planner

    setups, notes = planner.plan_setups(setup)
    for note in notes:
        console.print(f"[yellow]note[/]: {note}")
    return planner.search(setups, deadline_h, planner.plan_counts(setup), progress=progress)
