"""``capsim calibrate --mode llm``: iteration times of the built-in decoder over a paged KV cache.

Over a grid of (prompt tokens P, decoding sequences D, context tokens L) one iteration is built and
timed as the LLM server runs it (``calibration.llm_runtime.DecoderRuntime.step``, the code
``capsim bench-serve --llm`` calls for every iteration): D sequences each decoding one token after L
tokens of context, plus, when P > 0, one prompt chunk of P tokens — a whole prompt (which samples its
first token), and again a middle chunk of a long prompt whose first L tokens are computed (which samples
nothing: chunked prefill's chunks before the last). Every composition is measured ``samples`` times, all of them in one shuffled order (so the
machine's slow stretches spread over the grid rather than landing on one corner), after ``warmup``
untimed runs of each. The KV cache holds whatever the slots hold: attention reads and multiplies the
same number of values whatever they are.

Before the grid, the token-wise work (every layer's matmuls on n tokens, ``body``; the LM head on n
sampled rows, ``head``) is timed for every n to 32 and a ladder beyond (``operator_times``). The profile
keeps those tables, and each composition's counts — P, D, the KV tokens attention reads (K), the
query-key pairs it computes (A) and the tokens it samples (S), counted exactly as ``sim.llm.scheduler``
counts them — and its samples; the simulator fits ``β0 + a·body(P + D) + b·head(S) + β2·D + β3·K +
β4·A`` to them and draws the residuals (sim/profiles/llm.py).

After the grid, the idle sweep (``calibration/idle_sweep.py``, as for batches): a whole prompt of the
grid's smallest and a middle prompt size, timed right after the server waited 0.1 ms to 1 s for it in its
inbox the way ``--wait`` says, over the same prompts back to back just before: the profile's
``idle_response``, which the simulator applies to an iteration that starts on an idle replica (a
served replica meets idleness with a new prompt, nothing else running).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from calibration.idle_sweep import BACK_TO_BACK, GAPS_S, sweep_work
from calibration.llm_runtime import DecoderRuntime, PagedKvCache, SeqWork, operator_rows
from sim.llm.kv_cache import blocks_for
from sim.profiles.llm import SCHEMA

PREFILL_TOKENS = (0, 16, 64, 256)
DECODE_SEQS = (0, 1, 4, 8, 16, 32)
CONTEXT_TOKENS = (32, 128, 384)
IDLE_GAPS_S = (*GAPS_S, 1.0)  # a replica serving a few requests a second waits 0.1-1 s between them


@dataclass(frozen=True)
class LlmCalibrationRequest:
    model: str = "decoder"
    prefill_tokens: tuple[int, ...] = PREFILL_TOKENS
    decode_seqs: tuple[int, ...] = DECODE_SEQS
    context_tokens: tuple[int, ...] = CONTEXT_TOKENS
    samples: int = 10
    warmup: int = 2
    block_size: int = 16
    threads: int | None = None
    seed: int = 0
    idle_rounds: int = 6
    wait: str = "block"
    progress: bool = True
    command: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Composition:
    """D decodes after ``context`` tokens each, and a chunk of ``prefill`` tokens from ``chunk_start``
    (a whole prompt from 0, which samples; a middle chunk otherwise, which does not)."""

    prefill: int
    decodes: int
    context: int
    chunk_start: int

    @property
    def chunk_samples(self) -> bool:
        return self.chunk_start == 0

    def counts(self) -> dict[str, int]:
        """The scheduler's counts of this iteration (``sim.llm.scheduler.Scheduler._chunk`` and the decode round)."""
        c, done = self.prefill, self.chunk_start
        kv = self.decodes * (self.context + 1) + (done + c if c else 0)
        pairs = self.decodes * (self.context + 1) + (c * done + c * (c + 1) // 2 if c else 0)
        return {"prefill_tokens": c, "decode_tokens": self.decodes, "kv_tokens_read": kv, "attention_pairs": pairs,
                "output_tokens": self.decodes + int(bool(c) and self.chunk_samples), "context_tokens": self.context,
                "chunk_start": done}


def grid(req: LlmCalibrationRequest, max_positions: int) -> list[Composition]:
    """Every composition of the grid, each once (a chunk from 0 does not depend on L when D = 0)."""
    seen: dict[Composition, None] = {}
    for p in req.prefill_tokens:
        for d in req.decode_seqs:
            for length in req.context_tokens:
                starts = (0, length) if p else (0,)
                for start in starts:
                    comp = Composition(p, d, length if d else 0, start)
                    if (p or d) and max(comp.context + 1, start + p) <= max_positions:
                        seen[comp] = None
    return list(seen)


def calibrate_llm(req: LlmCalibrationRequest) -> dict:
    """Measure the grid; a ``capsim.profile/3`` document with an ``llm`` section."""
    from calibration.calibrate import resolve_device
    from calibration.memory import MemoryProbe
    from calibration.models import build_model
    from calibration.writer import environment, round_sig
    from sim.models.llm_archs import llm_arch

    started = time.perf_counter()
    if req.threads:
        torch.set_num_threads(req.threads)
    device = resolve_device("cpu")
    model = build_model(req.model, seed=req.seed).model.eval()
    arch = llm_arch(req.model)
    comps = grid(req, arch.max_positions)
    blocks = max(_blocks(c, req.block_size) for c in comps)
    cache = PagedKvCache(arch.layers, blocks, req.block_size, arch.heads, arch.head_dim)
    runtime = DecoderRuntime(model, cache)
    rng = np.random.default_rng(req.seed)
    order = [k for k in range(len(comps)) for _ in range(req.samples)]
    rng.shuffle(order)
    samples: list[list[float]] = [[] for _ in comps]
    top = max(max(c.prefill + c.decodes, c.decodes + 1) for c in comps)
    operators = runtime.operator_times(operator_rows(top), samples=max(3, req.samples // 2))
    with tqdm(total=len(comps) * req.warmup + len(order), disable=not req.progress, unit="iteration",
              desc="calibrate llm", dynamic_ncols=True) as bar:
        for comp in comps:
            for _ in range(req.warmup):
                _time(runtime, comp, rng, arch.vocab)
                bar.update()
        for k in order:
            samples[k].append(_time(runtime, comps[k], rng, arch.vocab))
            bar.update()
        swept = idle_compositions(comps) if req.idle_rounds else {}
        bar.total += req.idle_rounds * len(swept) * len(IDLE_GAPS_S) * (BACK_TO_BACK + 1)
        idle = sweep_work(lambda key: swept[key], lambda comp: _time(runtime, comp, rng, arch.vocab), list(swept),
                          req.idle_rounds, req.wait, req.seed, bar.update, unit="iteration",
                          gaps_s=IDLE_GAPS_S) if swept else None
    parameters = sum(p.numel() for p in model.parameters())
    iterations = [{**c.counts(), "step_s": [round_sig(s) for s in samples[k]]} for k, c in enumerate(comps)]
    return {
        "schema": SCHEMA, "kind": "measured",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment(device),
        "model": {"name": req.model, "dtype": "fp32", "compiled": False, "parameters": parameters,
                  "weight_bytes": parameters * 4, "seq_len": None},
        "llm": {
            "architecture": {k: getattr(arch, k) for k in ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab",
                                                          "max_positions")},
            "tensor_parallel": 1,
            "kv_cache": {"kind": "paged", "block_size": req.block_size, "blocks": blocks,
                         "layout": "per layer K and V of blocks x block_size token slots; contexts gathered per "
                                   "sequence (calibration/llm_runtime.py)"},
            "grid": {"prefill_tokens": list(req.prefill_tokens), "decode_seqs": list(req.decode_seqs),
                     "context_tokens": list(req.context_tokens)},
            "operators": {"rows": operators["rows"], "body_s": [round_sig(v) for v in operators["body_s"]],
                          "head_s": [round_sig(v) for v in operators["head_s"]], "samples": operators["samples"],
                          "method": "DecoderRuntime.operator_times: medians, after one untimed run of each count"},
            "iterations": iterations,
            "method": "DecoderRuntime.step timed with time.perf_counter, the grid's compositions x samples in one "
                      "shuffled order after warmup untimed runs of each (calibration/llm_calibrate.py)",
        },
        **({"idle_response": idle.response()} if idle is not None and idle.ratio else {}),
        "server": {"wait": req.wait},
        "memory": {"device_total_bytes": MemoryProbe(device).total_bytes(), "method": "host memory (MemTotal or the "
                   "cgroup limit)", "fit_method": "none (the KV cache is sized by the scenario)"},
        "calibration": {"samples": req.samples, "warmup": req.warmup, "seed": req.seed, "order": "shuffled",
                        "idle_rounds": req.idle_rounds,
                        "wall_s": round(time.perf_counter() - started, 2), "command": req.command},
    }


def idle_compositions(comps: list[Composition]) -> dict[str, Composition]:
    """What the idle sweep times: the iterations a served replica runs right after sitting idle, i.e. a
    newly arrived whole prompt (nothing else is running then), at the grid's smallest and a middle size."""
    prompts = sorted({c.prefill for c in comps if c.prefill and not c.decodes and c.chunk_start == 0})
    chosen = sorted({prompts[0], prompts[len(prompts) // 2]}) if prompts else []
    return {f"prompt {p}": Composition(p, 0, 0, 0) for p in chosen}


def _blocks(comp: Composition, block_size: int) -> int:
    decode = comp.decodes * blocks_for(comp.context + 1, block_size)
    return decode + (blocks_for(comp.chunk_start + comp.prefill, block_size) if comp.prefill else 0)


def _time(runtime: DecoderRuntime, comp: Composition, rng: np.random.Generator, vocab: int) -> float:
    """One iteration of ``comp`` on fresh token ids: its time (the block tables are set up outside it)."""
    cache, bs = runtime.cache, runtime.cache.block_size
    work = []
    for s in range(comp.decodes):
        cache.resize(s, blocks_for(comp.context + 1, bs))
        work.append(SeqWork(s, [int(rng.integers(vocab))], comp.context, True))
    if comp.prefill:
        seq = comp.decodes
        cache.resize(seq, blocks_for(comp.chunk_start + comp.prefill, bs))
        work.append(SeqWork(seq, rng.integers(0, vocab, comp.prefill).tolist(), comp.chunk_start, comp.chunk_samples))
    start = time.perf_counter()
    runtime.step(work)
    elapsed = time.perf_counter() - start
    for s in list(cache.tables):
        cache.release(s)
    return elapsed
