"""``capsim bench-serve``: the command line of the real benchmark server (the work: ``calibration/bench_serve.py``).

Arguments are checked and the arrival times drawn here, before torch is imported.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from sim.cli import bench_serve_llm
from sim.errors import CapsimError
from sim.serving.waiting import WAITS

EPILOG = """\
examples:
  capsim bench-serve --model calibration.validation_model:wide_mlp --threads 1 \\
      --max-batch-size 8 --max-queue-delay-ms 2 --rate 1500 --duration 5 --out runs/b8-1500
  capsim bench-serve --model mlp --replicas 2 --router least_outstanding --rate 4000 --out runs/two
  capsim bench-serve --model mlp --wait poll --rate 800 --out runs/poll   # a server that polls for work
  capsim bench-serve --model resnet50 --device cuda --dtype fp16 --max-batch-size 16 \\
      --max-queue-delay-ms 5 --rate 400 --duration 30 --out runs/h100-resnet
  capsim bench-serve --llm --model decoder --max-num-seqs 8 --max-num-batched-tokens 64 --rate 4 \\
      --input-tokens '{distribution: lognormal, mean_tokens: 48, cv: 0.6, max_tokens: 256}' --out runs/llm
then: capsim validate RUN_DIR --calibrate
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-serve", help="run a real dynamic-batching server under open-loop load and record it",
        description="Serve a torch model with Triton-style dynamic batching (max batch size, max queue "
                    "delay, preferred sizes) under open-loop Poisson or trace arrivals, and write "
                    "per-request records in the simulator's format for `capsim validate`.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="NAME|module:factory",
                   help="a built-in model (capsim calibrate --list-models) or module:factory")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default: cpu)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"), help="default: fp32")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch intra-op threads per replica (default: cores - 1 on cpu, leaving one for the "
                        "load generator; 1 on cuda; always 1 with --replicas > 1)")
    p.add_argument("--max-batch-size", type=int, default=1, metavar="B", help="default: 1")
    p.add_argument("--max-queue-delay-ms", type=float, default=0.0, metavar="T", help="default: 0")
    p.add_argument("--preferred-batch-sizes", default="", metavar="4,8",
                   help="sizes sent as soon as they can be formed (default: none)")
    p.add_argument("--rate", type=float, default=None, metavar="R", help="Poisson rate, requests/s")
    p.add_argument("--arrivals", default="poisson", choices=("poisson", "trace"), help="default: poisson")
    p.add_argument("--trace", metavar="FILE", help="CSV or Parquet with an arrival_s column (--arrivals trace)")
    p.add_argument("--duration", type=float, default=10.0, metavar="S",
                   help="arrival horizon in seconds (default 10; a trace is cut there)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the arrival times and weights")
    p.add_argument("--replicas", type=int, default=1, metavar="K",
                   help="replica processes behind a router (cpu; default 1 = in this process)")
    p.add_argument("--router", default="round_robin", choices=("round_robin", "least_outstanding"),
                   help="with --replicas > 1 (default: round_robin)")
    p.add_argument("--wait", default="block", metavar="block|poll",
                   help="how the server waits for work: block = on a condition variable until a request "
                        "comes (default); poll = a busy loop checking the queue, never blocking")
    p.add_argument("--profile", metavar="FILE|BUILTIN",
                   help="warm up only this profile's batch sizes (default: every size 1..max)")
    p.add_argument("--warmup-rounds", type=int, default=3, metavar="N",
                   help="batches of each warm-up size before t0 (default 3)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="directory to write; one that exists must be "
                   "empty, unless --force")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder (once the run is complete)")
    bench_serve_llm.add_arguments(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.llm:
        return bench_serve_llm.main(args)
    from sim.profiles.profile import resolve_profile_path
    from sim.results.files import check_folder

    config, arrivals, settings = _parse(args)
    given = [Path(args.trace)] if args.trace else []
    given += [resolve_profile_path(args.profile)] if args.profile else []
    check_folder(args.out, force=args.force, inputs=given)  # before the model loads and the run starts
    try:
        from calibration.bench_serve import serve
    except ImportError as exc:
        raise CapsimError(f"bench-serve needs torch ({exc.name} is missing): pip install 'capsim[calibration]'") from None
    return serve(config, arrivals, settings, Path(args.out), force=args.force)


def _parse(args: argparse.Namespace):
    from sim.cli.calibrate import parse_batch_sizes

    def positive(flag: str, value, minimum: float = 0.0, strict: bool = True):
        if value is None or not np.isfinite(value) or value < minimum or (strict and value == minimum):
            raise CapsimError(f"{flag} = {value!r}: a number {'>' if strict else '>='} {minimum:g}")
        return value

    positive("--max-batch-size", args.max_batch_size, 1, strict=False)
    positive("--max-queue-delay-ms", args.max_queue_delay_ms, 0, strict=False)
    positive("--duration", args.duration)
    positive("--replicas", args.replicas, 1, strict=False)
    positive("--warmup-rounds", args.warmup_rounds, 1, strict=False)
    if args.wait not in WAITS:
        raise CapsimError(f"--wait = {args.wait!r}: use block (blocked until work comes) or poll (a busy loop)")
    if args.replicas > 1 and args.device != "cpu":
        raise CapsimError(f"--replicas = {args.replicas}: multi-replica mode is for --device cpu; on a "
                               "GPU run one bench-serve per GPU")
    preferred = parse_batch_sizes(args.preferred_batch_sizes) if args.preferred_batch_sizes else ()
    bad = [b for b in preferred if b > args.max_batch_size]
    if bad:
        raise CapsimError(f"--preferred-batch-sizes = {args.preferred_batch_sizes!r}: {bad} exceed "
                               f"--max-batch-size {args.max_batch_size}")
    threads = args.threads or (max(1, (os.cpu_count() or 2) - 1) if args.device == "cpu" else 1)
    positive("--threads", threads, 1, strict=False)
    if args.replicas > 1:
        threads = 1
    arrivals, arrival_settings = _arrivals(args)
    warm_sizes: tuple[int, ...] = ()
    if args.profile:
        from sim.profiles.profile import as_profile

        warm_sizes = tuple(b for b in as_profile(args.profile).batch_sizes if b <= args.max_batch_size)
    config = {"model": args.model, "device": args.device, "dtype": args.dtype, "threads": threads,
              "max_batch_size": args.max_batch_size, "max_queue_delay_s": args.max_queue_delay_ms / 1e3,
              "preferred_batch_sizes": preferred, "warmup_sizes": warm_sizes,
              "warmup_rounds": args.warmup_rounds, "seed": args.seed, "wait": args.wait}
    settings = {"arrivals": arrival_settings, "rate_rps": args.rate, "seed": args.seed,
                "duration_s": args.duration, "replicas": args.replicas,
                "router": args.router if args.replicas > 1 else None, "profile": args.profile}
    return config, arrivals, settings


def _arrivals(args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    """Arrival times drawn in advance: the simulator's own Poisson generator, or a trace cut at --duration."""
    from sim.errors import CapsimError
    from sim.scenario.model import PoissonArrivals
    from sim.workload.arrivals import ARRIVALS, read_trace

    if args.arrivals == "trace":
        if not args.trace:
            raise CapsimError("--arrivals trace needs --trace FILE (a CSV or Parquet with arrival_s)")
        try:
            times = read_trace(Path(args.trace))
        except CapsimError as exc:
            raise CapsimError(f"--trace: {exc}") from None
        times = times[times < args.duration]
        if times.size == 0:
            raise CapsimError(f"--trace {args.trace}: no arrival before --duration {args.duration}")
        return times, {"process": "trace", "path": str(args.trace)}
    if args.rate is None or not args.rate > 0:
        raise CapsimError(f"--rate = {args.rate!r}: a Poisson rate > 0 requests/s is needed")
    rng = np.random.default_rng(np.random.SeedSequence(args.seed).spawn(1)[0])
    times = ARRIVALS["poisson"](PoissonArrivals(rate_rps=args.rate), rng, args.duration, None)
    return np.asarray(times, float), {"process": "poisson", "rate_rps": args.rate}


