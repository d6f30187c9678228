"""``capsim bench-serve --llm``: the flags of the continuous-batching LLM server (the work:
``calibration/llm_bench_serve.py``). Checked here, and the arrivals and token counts drawn, before torch
is imported; the scheduler's rules are the scenario's (docs/llm.md), so the knobs are checked as
``llm:`` is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter, ValidationError

from sim.errors import CapsimError
from sim.llm.kv_cache import blocks_for

BENCH_TOKEN_KINDS = ("fixed", "lognormal")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLM serving (--llm: a continuous-batching decoder server, docs/validation.md)")
    g.add_argument("--llm", action="store_true", help="serve a decoder token by token (the built-in decoder) with "
                   "the simulator's iteration-level scheduler, a paged KV cache and a token workload; "
                   "--max-batch-size, --max-queue-delay-ms, --preferred-batch-sizes, --replicas and --profile do "
                   "not apply")
    g.add_argument("--max-num-seqs", type=int, default=16, metavar="N", help="most sequences per iteration (default 16)")
    g.add_argument("--max-num-batched-tokens", type=int, default=256, metavar="N",
                   help="token budget of one iteration (default 256)")
    g.add_argument("--no-chunked-prefill", action="store_true", help="an iteration prefills whole prompts or "
                   "decodes (vLLM V0's default); then --max-num-batched-tokens must be >= --max-model-len")
    g.add_argument("--block-size", type=int, default=16, metavar="N", help="tokens per KV block (default 16)")
    g.add_argument("--kv-blocks", type=int, default=512, metavar="N", help="KV blocks of the paged cache (default 512)")
    g.add_argument("--max-model-len", type=int, default=512, metavar="N",
                   help="longest sequence, prompt + output tokens (default 512)")
    g.add_argument("--input-tokens", default="64", metavar="SPEC", help="prompt lengths: N (fixed) or a YAML mapping "
                   "as workload.input_tokens, e.g. '{distribution: lognormal, mean_tokens: 48, cv: 0.6, "
                   "max_tokens: 256}' (default 64)")
    g.add_argument("--output-tokens", default="32", metavar="SPEC", help="output lengths, as --input-tokens "
                   "(default 32)")


def main(args: argparse.Namespace) -> int:
    from sim.results.files import check_folder

    config, arrivals, input_tokens, output_tokens, settings = parse(args)
    check_folder(args.out, force=args.force, inputs=[Path(args.trace)] if args.trace else [])
    try:
        from calibration.llm_bench_serve import serve_llm
    except ImportError as exc:
        raise CapsimError(f"bench-serve needs torch ({exc.name} is missing): pip install 'capsim[calibration]'") from None
    return serve_llm(config, arrivals, input_tokens, output_tokens, settings, Path(args.out), force=args.force)


def parse(args: argparse.Namespace):
    """(server config fields, arrival times, input and output token counts, settings for run.json)."""
    from sim.cli.bench_serve import _arrivals
    from sim.models.llm_archs import LLM_ARCHS
    from sim.serving.waiting import WAITS

    if args.model not in LLM_ARCHS or LLM_ARCHS[args.model].gated_mlp:
        raise CapsimError(f"--model = {args.model!r}: --llm serves capsim's built-in decoder (decoder)")
    for flag in ("max_num_seqs", "max_num_batched_tokens", "block_size", "kv_blocks", "max_model_len",
                 "warmup_rounds"):
        if getattr(args, flag) < 1:
            raise CapsimError(f"--{flag.replace('_', '-')} = {getattr(args, flag)}: an integer >= 1")
    if args.wait not in WAITS:
        raise CapsimError(f"--wait = {args.wait!r}: use block (blocked until work comes) or poll (a busy loop)")
    if args.device != "cpu" or args.dtype != "fp32" or args.replicas != 1:
        raise CapsimError("--llm runs one replica on --device cpu in --dtype fp32")
    _check_knobs(args, LLM_ARCHS[args.model].max_positions)
    arrivals, arrival_settings = _arrivals(args)
    specs = {key: token_spec(f"--{key.replace('_', '-')}", getattr(args, key)) for key in ("input_tokens", "output_tokens")}
    input_tokens, output_tokens = draw_tokens(specs["input_tokens"], specs["output_tokens"], arrivals.size, args.seed)
    _check_lengths(input_tokens, output_tokens, args.max_model_len)
    config = {"model": args.model, "threads": args.threads or 1, "max_num_seqs": args.max_num_seqs,
              "max_num_batched_tokens": args.max_num_batched_tokens,
              "enable_chunked_prefill": not args.no_chunked_prefill, "block_size": args.block_size,
              "kv_blocks": args.kv_blocks, "max_model_len": args.max_model_len, "seed": args.seed, "wait": args.wait}
    settings = {"arrivals": arrival_settings, "rate_rps": args.rate, "seed": args.seed, "duration_s": args.duration,
                "replicas": 1, "router": None,
                "tokens": {key: spec.model_dump() for key, spec in specs.items()}}
    return config, arrivals, input_tokens, output_tokens, settings


def _check_knobs(args: argparse.Namespace, max_positions: int) -> None:
    if args.max_model_len > max_positions:
        raise CapsimError(f"--max-model-len = {args.max_model_len}: at most {max_positions}, the context length of "
                          f"{args.model}")
    if args.max_num_batched_tokens < args.max_num_seqs:
        raise CapsimError(f"--max-num-batched-tokens = {args.max_num_batched_tokens}: at least --max-num-seqs "
                          f"({args.max_num_seqs}): every running sequence decodes one token per iteration")
    if args.no_chunked_prefill and args.max_num_batched_tokens < args.max_model_len:
        raise CapsimError(f"--max-num-batched-tokens = {args.max_num_batched_tokens}: without chunked prefill a "
                          f"whole prompt must fit one iteration: at least --max-model-len ({args.max_model_len})")
    need = blocks_for(args.max_model_len, args.block_size)
    if args.kv_blocks < need:
        raise CapsimError(f"--kv-blocks = {args.kv_blocks}: at least {need}, the blocks of one sequence of "
                          f"--max-model-len = {args.max_model_len} tokens")


def token_spec(flag: str, text: str):
    """``N`` (fixed) or a YAML mapping of a fixed or lognormal token length (``workload.input_tokens``'s forms)."""
    from sim.scenario.keys import parse_value
    from sim.scenario.llm import TokenLengths

    value = parse_value(str(text), flag)
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"distribution": "fixed", "tokens": value}
    if not isinstance(value, dict) or value.get("distribution") not in BENCH_TOKEN_KINDS:
        raise CapsimError(f"{flag} = {text!r}: a number of tokens, or a mapping with distribution fixed or lognormal, "
                          "e.g. '{distribution: lognormal, mean_tokens: 48, cv: 0.6, max_tokens: 256}'")
    try:
        return TypeAdapter(TokenLengths).validate_python(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(part) for part in err["loc"][1:]) or "(the mapping)"
        raise CapsimError(f"{flag} = {text!r}: {key}: {err['msg']}") from None


def draw_tokens(input_spec, output_spec, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Token counts of ``n`` requests, drawn as the simulator draws them (``sim.workload.tokens``), seeded
    apart from the arrival times."""
    from sim.workload.tokens import TOKEN_SOURCES

    rng_in, rng_out = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1]).spawn(2)
    counts = [TOKEN_SOURCES[spec.distribution](spec, rng, n, None, key).astype(np.int64)
              for spec, rng, key in ((input_spec, rng_in, "input_tokens"), (output_spec, rng_out, "output_tokens"))]
    return counts[0], counts[1]


def _check_lengths(input_tokens: np.ndarray, output_tokens: np.ndarray, max_model_len: int) -> None:
    over = input_tokens + output_tokens > max_model_len
    if over.any():
        k = int(np.argmax(input_tokens + output_tokens))
        raise CapsimError(f"--input-tokens / --output-tokens: {int(over.sum()):,} of {over.size:,} requests need more "
                          f"than --max-model-len = {max_model_len} tokens (the most: {int(input_tokens[k])} + "
                          f"{int(output_tokens[k])}); set max_tokens in the specs or raise --max-model-len")
