"""`capsim plan` on an llm scenario: its flags (TTFT/TPOT objectives, TP degrees, scheduler knobs) and the
search space they make (``sim.planner.llm``). Parsing and checks only; the search is the planner's own."""

from __future__ import annotations

REQUEST_LEVEL_FLAGS = (("slo_p99_ms", "--slo-p99-ms", "--ttft-ms and --tpot-ms"),
                       ("batch_sizes", "--batch-sizes", "--max-num-seqs"),
                       ("queue_delays_ms", "--queue-delays-ms", "--max-num-batched-tokens"))
LLM_FLAGS = (("ttft_ms", "--ttft-ms"), ("tpot_ms", "--tpot-ms"), ("tensor_parallel", "--tensor-parallel"),
             ("max_num_seqs", "--max-num-seqs"), ("max_num_batched_tokens", "--max-num-batched-tokens"))


def add_llm_options(p) -> None:
    g = p.add_argument_group("llm scenarios (an llm section: token-level serving, docs/llm.md)")
    g.add_argument("--ttft-ms", type=float, default=None, help="TTFT objective, ms (default: llm.slo.ttft_s)")
    g.add_argument("--tpot-ms", type=float, default=None, help="TPOT objective, ms (default: llm.slo.tpot_s)")
    g.add_argument("--tensor-parallel", default=None, metavar="TPS",
                   help="tensor-parallel degrees to try, e.g. 1,2,4 (default: 1,2,4,8 where they divide the heads)")
    g.add_argument("--max-num-seqs", default=None, metavar="N,...",
                   help="llm.max_num_seqs values to try (default: the scenario's, its half and its quarter)")
    g.add_argument("--max-num-batched-tokens", default=None, metavar="N,...",
                   help="llm.max_num_batched_tokens values to try (default: the scenario's)")


def check_flags(scenario, args) -> None:
    """Refuse the flags of the other mode, naming what to use instead."""
    from sim.errors import ScenarioError

    if scenario.llm is not None:
        for attr, flag, instead in REQUEST_LEVEL_FLAGS:
            if getattr(args, attr, None) is not None:
                raise ScenarioError(f"{flag}: does not apply to an llm scenario (its scheduler batches and "
                                    f"llm.slo holds TTFT and TPOT); use {instead}")
        return
    for attr, flag in LLM_FLAGS:
        if getattr(args, attr, None) is not None:
            raise ScenarioError(f"{flag}: applies to llm scenarios only (an llm section); this one serves "
                                "requests: use --slo-p99-ms, --batch-sizes, --queue-delays-ms")


def with_llm_slo(scenario, args):
    """``--ttft-ms`` / ``--tpot-ms`` as ``llm.slo.ttft_s`` / ``tpot_s``."""
    from sim.errors import ScenarioError
    from sim.scenario.keys import updated

    for flag, value, key in (("--ttft-ms", args.ttft_ms, "llm.slo.ttft_s"), ("--tpot-ms", args.tpot_ms,
                                                                             "llm.slo.tpot_s")):
        if value is not None:
            if not value > 0:
                raise ScenarioError(f"{flag} = {value:g}: must be > 0")
            scenario = updated(scenario, {key: value / 1e3}, flag)
    return scenario


def whole_numbers(text: str | None, flag: str) -> list[int] | None:
    """``1,2,4`` or ``1..4`` as whole numbers ≥ 1 (None when the flag was not given)."""
    from sim.errors import ScenarioError
    from sim.scenario.keys import parse_param

    if text is None:
        return None
    _, values = parse_param(f"{flag}={text}")
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ScenarioError(f"{flag} = {text!r}: a comma-separated list of whole numbers ≥ 1 (or A..B)")
    return values


def build_llm_space(scenario, args):
    """The llm search space from the command line; its size is checked before anything runs."""
    from sim.experiments.sweep import check_runs
    from sim.planner.llm import llm_space
    from sim.planner.search import autoscaler_params
    from sim.scenario.keys import parse_param

    replicas = parse_param(f"fleet.replicas={args.replicas}")[1] if args.replicas else None
    extra = autoscaler_params(scenario) if not args.param else {}
    for spec in args.param:
        key, values = parse_param(spec)
        extra[key] = values
    space = llm_space(scenario, gpus=[g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None,
                      estimates=not args.no_estimates,
                      tensor_parallel=whole_numbers(args.tensor_parallel, "--tensor-parallel"),
                      max_num_seqs=whole_numbers(args.max_num_seqs, "--max-num-seqs"),
                      max_num_batched_tokens=whole_numbers(args.max_num_batched_tokens, "--max-num-batched-tokens"),
                      replicas=replicas, extra=extra)
    counts = [len(space.candidates), len(space.tensor_parallel), len(space.max_num_seqs),
              len(space.max_num_batched_tokens), len(replicas or [1]), *map(len, extra.values())]
    check_runs(counts, scenario.run.replications, "the plan's space (GPUs × --tensor-parallel × --max-num-seqs × "
               "--max-num-batched-tokens × --replicas × --param values)")
    return space
