"""``capsim calibrate``: the command line of the calibration (the work: ``calibration/calibrate.py``;
docs/calibration.md).

Arguments are checked here, before torch is imported.
"""

from __future__ import annotations

import argparse
import time

from sim.cli import calibrate_llm
from sim.errors import CapsimError
from sim.serving.waiting import WAITS

DEFAULTS = {"samples": 100, "warmup": 10, "replay_batches": 100, "idle_rounds": 6, "runtime_start_runs": 3}
QUICK = {"samples": 20, "warmup": 3, "replay_batches": 20, "idle_rounds": 2, "runtime_start_runs": 1}
TRAIN_DEFAULTS = {"samples": 30, "warmup": 5, "world_size": 2, "allreduce_samples": 20, "batch_sizes": (1, 4, 16, 64)}
TRAIN_QUICK = {"samples": 8, "warmup": 2, "allreduce_samples": 5}
EPILOG = """\
built-in models: mlp, resnet50, bert-base, decoder, mlp-2048, bert-encoder (the last two: the models
measured on an H100, docs/gpu.md; test-tiny, test-stall for tests).
Default batch sizes: mlp and mlp-2048 1..256 (powers of two), resnet50 1..16, bert-base and bert-encoder
1..8, decoder 1..16,
module:factory 1..32. A factory returns (model, make_input) with make_input(batch_size) -> tensor
or tuple of tensors, batch first; calibration calls make_input(1) per request and concatenates.

example: capsim calibrate --model mlp --device cpu --dtype fp32 --out cpu-mlp-fp32.json
         capsim calibrate --mode train --model mlp --batch-sizes 16,64 --world-size 2 --threads 1
         capsim calibrate --mode llm --model decoder --threads 1 --out cpu-decoder-llm.json   # iteration times
         capsim calibrate --model my_pkg.serving:build --threads 1 --wait poll   # a server that polls
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate", help="measure a model's service times on this machine and write a profile",
        description="Benchmark a model per batch size (end-to-end latency, forward time, first-call "
                    "stalls, host overhead, the slowdown after idle gaps, a serving replay, memory) and its load "
                    "times, and write a capsim.profile/1 JSON file for the simulator.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="NAME|module:factory",
                   help="a built-in model (see below) or module:factory for your own")
    p.add_argument("--device", default="cpu", metavar="cpu|cuda", help="where to run (default: cpu)")
    p.add_argument("--dtype", default="fp32", metavar="fp32|fp16|bf16",
                   help="weights and floating inputs (default: fp32)")
    p.add_argument("--compile", action="store_true", help="run torch.compile(model); its compile time "
                   "shows up in the first calls")
    p.add_argument("--batch-sizes", metavar="1,2,4,...", help="comma-separated batch sizes >= 1 "
                   "(default: per model, see below)")
    p.add_argument("--samples", type=str, metavar="N",
                   help=f"timed batches per size, >= 1; 50 or more recommended (default {DEFAULTS['samples']})")
    p.add_argument("--warmup", type=str, metavar="N",
                   help=f"untimed batches per size after its first call (default {DEFAULTS['warmup']})")
    p.add_argument("--seq-len", type=str, metavar="N", help="tokens per request for bert-base, bert-encoder and decoder "
                   "(default 128)")
    p.add_argument("--threads", type=str, metavar="N", help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--replay-batches", type=str, metavar="N", help="batches in the serving replay of mixed "
                   f"sizes with idle gaps; 0 skips it (default {DEFAULTS['replay_batches']})")
    p.add_argument("--replay-utilisation", type=str, default="0.2", metavar="U",
                   help="busy share the replay's idle gaps are sized for, in (0, 1] (default 0.2)")
    p.add_argument("--wait", default="block", metavar="block|poll",
                   help="how the server you model waits for work, which the idle sweep and the replay wait as and "
                        "the profile records (server.wait): block = blocked until work comes (default); poll = a "
                        "busy loop that never blocks (capsim bench-serve --wait)")
    p.add_argument("--idle-rounds", type=str, metavar="N",
                   help="rounds of the idle sweep (a batch after waiting 0.1 ms..0.3 s for work, against back to back, "
                        f"at 3 sizes: the profile's idle_response); 0 skips it (default {DEFAULTS['idle_rounds']})")
    p.add_argument("--skip-load", action="store_true",
                   help="do not measure checkpoint read, runtime start and load rate")
    p.add_argument("--runtime-start-runs", type=str, metavar="N", help="fresh interpreters timed for "
                   f"import torch + device context (default {DEFAULTS['runtime_start_runs']})")
    p.add_argument("--scratch-dir", metavar="DIR", help="where to write the temporary checkpoint "
                   "(default: the system temp dir; put it on the disk that will hold your weights)")
    p.add_argument("--seed", type=str, default="0", metavar="N", help="seed for weights, inputs and replay")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: "
                   + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
                   + " unless given")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-models", action="store_true", help="list the built-in models and exit")
    p.add_argument("--out", metavar="FILE", help="profile to write (default: <device>-<model>-<dtype>.json; "
                   "--mode train: <device>-<model>-train.json)")
    train = p.add_argument_group("training (--mode train: calibration/training.py, docs/training.md)")
    train.add_argument("--mode", default="serve", metavar="serve|train|llm", help="serve: service times of a "
                       "serving loop (default); train: forward+backward and optimiser steps per micro-batch size "
                       "(--batch-sizes), and all-reduce times on --world-size processes (a capsim.profile/3 file); "
                       "llm: iteration times of the built-in decoder over a paged KV cache (the grid below)")
    train.add_argument("--world-size", type=str, metavar="N", help="processes for the all-reduce (gloo on cpu, NCCL "
                       f"on cuda: one GPU each); 1 skips it (default {TRAIN_DEFAULTS['world_size']})")
    train.add_argument("--precision", default="fp32", metavar="fp32|bf16-mixed|fp16-mixed",
                       help="training precision (mixed: autocast, cuda only; default fp32)")
    train.add_argument("--optimizer", default="adam", metavar="adam|sgd|sgd-momentum", help="default adam (AdamW)")
    train.add_argument("--allreduce-samples", type=str, metavar="N",
                       help=f"timed all-reduces per message size (default {TRAIN_DEFAULTS['allreduce_samples']})")
    calibrate_llm.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list_models:
        return _list_models()
    if not args.model:
        raise CapsimError("--model is required (a built-in name or module:factory; see --list-models)")
    if args.mode not in ("serve", "train", "llm"):
        raise CapsimError(f"--mode = {args.mode!r}: use serve (service times), train (training steps) or llm "
                          "(LLM iteration times)")
    if args.mode == "train":
        return _run_train(args)
    if args.mode == "llm":
        return calibrate_llm.run_llm(args)
    if args.device not in ("cpu", "cuda"):
        raise CapsimError(f"--device = {args.device!r}: use cpu or cuda")
    if args.dtype not in ("fp32", "fp16", "bf16"):
        raise CapsimError(f"--dtype = {args.dtype!r}: use fp32, fp16 or bf16")
    if args.wait not in WAITS:
        raise CapsimError(f"--wait = {args.wait!r}: use block (blocked until work comes) or poll (a busy loop)")
    base = QUICK if args.quick else DEFAULTS
    counts = {k: _count(args, k, base[k], minimum=1 if k == "samples" else 0) for k in DEFAULTS}
    batch_sizes = parse_batch_sizes(args.batch_sizes) if args.batch_sizes else ()
    utilisation = _number("--replay-utilisation", args.replay_utilisation)
    if not 0 < utilisation <= 1:
        raise CapsimError(f"--replay-utilisation = {args.replay_utilisation!r}: a number in (0, 1]")
    from sim.results.files import check_file

    out = check_file(args.out or f"{args.device}-{args.model.replace(':', '-')}-{args.dtype}.json")
    try:
        from calibration.calibrate import CalibrationRequest, calibrate, resolve_device
        from calibration.models import check_model_name
    except ImportError as exc:
        raise CapsimError(f"calibrate needs torch ({exc.name} is missing): pip install 'capsim[calibration]'") from None
    from sim.profiles.profile import write_profile

    check_model_name(args.model)
    resolve_device(args.device)
    request = CalibrationRequest(
        model=args.model, device=args.device, dtype=args.dtype, compile=args.compile,
        batch_sizes=batch_sizes, samples=counts["samples"], warmup=counts["warmup"],
        seq_len=_count(args, "seq_len", None, minimum=1), threads=_count(args, "threads", None, minimum=1),
        replay_batches=counts["replay_batches"], replay_utilisation=utilisation, wait=args.wait,
        idle_rounds=counts["idle_rounds"],
        measure_load=not args.skip_load, runtime_start_runs=counts["runtime_start_runs"],
        scratch_dir=args.scratch_dir, seed=_count(args, "seed", 0, minimum=0),
        progress=not args.no_progress, command=_command(args),
    )
    started = time.perf_counter()
    doc = calibrate(request)
    path = write_profile(doc, out)
    print(f"wrote {path} ({doc['model']['name']}, {len(doc['batches'])} batch sizes, "
          f"{time.perf_counter() - started:.1f} s); see it with: capsim profile show {path}")
    return 0


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4); anything else is a one-line error."""
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise CapsimError(f"--batch-sizes = {text!r}: batch sizes are integers >= 1 separated by "
                                   f"commas, e.g. 1,2,4,8 ({part!r} is not)")
        sizes.append(int(part))
    return tuple(sorted(set(sizes)))


def _count(args: argparse.Namespace, key: str, default: int | None, minimum: int) -> int | None:
    text = getattr(args, key)
    if text is None:
        return default
    text = str(text).strip()
    if not text.lstrip("-").isdigit() or int(text) < minimum:
        raise CapsimError(f"--{key.replace('_', '-')} = {text!r}: an integer >= {minimum}")
    return int(text)


def _number(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CapsimError(f"{flag} = {text!r}: a number") from None


def _command(args: argparse.Namespace) -> list[str]:
    """The command line as given, for the record: only what the user said (defaults are in the profile's
    own fields), from the arguments ``sim.cli.main`` parsed."""
    return ["capsim", *args.argv]


def _run_train(args: argparse.Namespace) -> int:
    """``--mode train``: check the training flags, measure (calibration/training.py), write a /3 profile."""
    from sim.training.states import OPTIMIZERS, PRECISIONS

    if args.device not in ("cpu", "cuda"):
        raise CapsimError(f"--device = {args.device!r}: use cpu or cuda")
    if args.precision not in PRECISIONS:
        raise CapsimError(f"--precision = {args.precision!r}: use {', '.join(PRECISIONS)}")
    if args.optimizer not in OPTIMIZERS:
        raise CapsimError(f"--optimizer = {args.optimizer!r}: use {', '.join(OPTIMIZERS)}")
    base = {**TRAIN_DEFAULTS, **(TRAIN_QUICK if args.quick else {})}
    counts = {k: _count(args, k, base[k], minimum=1) for k in ("samples", "warmup", "world_size", "allreduce_samples")}
    sizes = parse_batch_sizes(args.batch_sizes) if args.batch_sizes else base["batch_sizes"]
    from sim.results.files import check_file

    out = check_file(args.out or f"{args.device}-{args.model.replace(':', '-')}-train.json")
    try:
        from calibration.models import check_model_name
        from calibration.training import TrainCalibrationRequest, calibrate_training
    except ImportError as exc:
        raise CapsimError(f"calibrate needs torch ({exc.name} is missing): pip install 'capsim[calibration]'") from None
    from sim.profiles.training import write_training_profile

    check_model_name(args.model)
    request = TrainCalibrationRequest(
        model=args.model, micro_batches=sizes, device=args.device, precision=args.precision,
        optimizer=args.optimizer, samples=counts["samples"], warmup=counts["warmup"],
        world_size=counts["world_size"], allreduce_samples=counts["allreduce_samples"],
        threads=_count(args, "threads", 1, minimum=1), seq_len=_count(args, "seq_len", None, minimum=1),
        seed=_count(args, "seed", 0, minimum=0), progress=not args.no_progress, command=_command(args))
    started = time.perf_counter()
    doc = calibrate_training(request)
    path = write_training_profile(doc, out)
    print(f"wrote {path} ({doc['model']['name']}, micro-batches {','.join(map(str, sizes))}, all-reduce on "
          f"{counts['world_size']} processes, {time.perf_counter() - started:.1f} s); use it with "
          f"compute.profile in a training plan (capsim train-plan)")
    return 0


def _list_models() -> int:
    try:
        from calibration.models import BUILTIN_MODELS
    except ImportError as exc:
        raise CapsimError(f"calibrate needs torch ({exc.name} is missing): pip install 'capsim[calibration]'") from None

    for spec in BUILTIN_MODELS.values():
        sizes = ",".join(map(str, spec.default_batch_sizes))
        print(f"{spec.name:<11} {spec.description}  [default batch sizes {sizes}]")
    return 0
