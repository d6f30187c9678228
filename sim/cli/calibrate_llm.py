"""``capsim calibrate --mode llm``: flags and checks of the LLM iteration calibration (the work:
``calibration/llm_calibrate.py``; the profile: sim/profiles/llm.py; docs/llm.md). Checked before torch
is imported; the fit and its quality are printed from the profile the simulator will read.
"""

from __future__ import annotations

import argparse
import time

from sim.errors import CapsimError

LLM_DEFAULTS = {"samples": 10, "warmup": 2, "idle_rounds": 6}
LLM_QUICK = {"samples": 3, "warmup": 1, "idle_rounds": 1}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLM iterations (--mode llm: calibration/llm_calibrate.py, docs/llm.md)")
    g.add_argument("--prefill-tokens", metavar="0,16,...", help="prompt-chunk sizes of the grid (default 0,16,64,256)")
    g.add_argument("--decode-seqs", metavar="0,1,...", help="decoding sequences of the grid (default 0,1,4,8,16,32)")
    g.add_argument("--context-tokens", metavar="32,...", help="context lengths of the grid (default 32,128,384)")
    g.add_argument("--block-size", type=str, default="16", metavar="N", help="tokens per KV block (default 16)")


def run_llm(args: argparse.Namespace) -> int:
    from sim.cli.calibrate import _command, _count
    from sim.models.llm_archs import LLM_ARCHS
    from sim.serving.waiting import WAITS

    if args.model not in LLM_ARCHS or LLM_ARCHS[args.model].gated_mlp:
        raise CapsimError(f"--model = {args.model!r}: --mode llm measures capsim's built-in decoder (decoder)")
    if args.device != "cpu" or args.dtype != "fp32":
        raise CapsimError("--mode llm measures on --device cpu in --dtype fp32")
    if args.wait not in WAITS:
        raise CapsimError(f"--wait = {args.wait!r}: use block (blocked until work comes) or poll (a busy loop)")
    base = LLM_QUICK if args.quick else LLM_DEFAULTS
    counts = {k: _count(args, k, base[k], minimum=1 if k == "samples" else 0) for k in base}
    grid = {key: _grid(args, key, minimum=1 if key == "context_tokens" else 0) for key in
            ("prefill_tokens", "decode_seqs", "context_tokens")}
    from sim.results.files import check_file

    out = check_file(args.out or f"cpu-{args.model}-llm.json")
    try:
        from calibration.llm_calibrate import LlmCalibrationRequest, calibrate_llm
    except ImportError as exc:
        raise CapsimError(f"calibrate needs torch ({exc.name} is missing): pip install 'capsim[calibration]'") from None
    from sim.profiles.llm import load_iteration_profile, write_iteration_profile

    request = LlmCalibrationRequest(
        model=args.model, **{k: v for k, v in grid.items() if v is not None}, samples=counts["samples"],
        warmup=counts["warmup"], idle_rounds=counts["idle_rounds"], wait=args.wait, block_size=_count(args, "block_size", 16, minimum=1),
        threads=_count(args, "threads", None, minimum=1), seed=_count(args, "seed", 0, minimum=0),
        progress=not args.no_progress, command=_command(args))
    started = time.perf_counter()
    path = write_iteration_profile(calibrate_llm(request), out)
    profile = load_iteration_profile(path)
    q = profile.quality()
    print(f"wrote {path} ({args.model}, {q['compositions']} compositions x {counts['samples']} samples, "
          f"{time.perf_counter() - started:.1f} s)\n"
          f"fit: step = {profile.fit.describe()}\n"
          f"fit quality: per composition |median / fit - 1| median {q['median_abs_error']:.1%}, p90 "
          f"{q['p90_abs_error']:.1%}, max {q['max_abs_error']:.1%}; R² {q['r2']:.4f}; residual ratios p5..p95 "
          f"{q['residual_p5']:.3f}..{q['residual_p95']:.3f}\n"
          f"use it with llm.step_time: {{type: calibrated, profile: {path}}} (llm.model: {args.model}, dtype: fp32)")
    return 0


def _grid(args: argparse.Namespace, key: str, minimum: int) -> tuple[int, ...] | None:
    text = getattr(args, key)
    if text is None:
        return None
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < minimum:
            raise CapsimError(f"--{key.replace('_', '-')} = {text!r}: integers >= {minimum} separated by commas "
                              f"({part!r} is not)")
        values.append(int(part))
    return tuple(sorted(set(values)))
