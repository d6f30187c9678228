"""A real continuous-batching LLM server on torch: the simulator's own scheduler driving a real decoder.

``run_llm_server(config, arrival_s, input_tokens, output_tokens)`` serves one replica in this process.
A load-generator thread releases request ``i`` into the server's inbox once ``arrival_s[i]`` has passed
(``calibration.server``'s ``Clock`` and ``Inbox``, as the request-level server); the serving loop, in the
calling thread, runs iterations back to back while it has work:

1. move every request that reached the inbox into the scheduler's waiting queue;
2. ``start_s``; form the iteration with :class:`sim.llm.scheduler.Scheduler` (**the simulator's
   scheduler itself**, not a copy: decodes first, then prompt chunks FCFS within the token budget, block
   accounting and preemption by recompute, or prefill-or-decode without chunked prefill; docs/llm.md);
3. run it on the model (:class:`IterationExecutor`: the scheduler's block counts become block tables
   of the paged KV cache, its chunks and decodes become token inputs, ``calibration.llm_runtime``);
4. ``end_s``; apply it with ``Scheduler.complete(it, end_s)``, which stamps first tokens and completions
   at the end of the iteration that produced them, exactly where the simulator stamps them.

Where the real server must differ from the simulated one: its iterations take the time they take (the
simulator draws them from a model); a request reaching an idle server wakes the loop (tens of
microseconds, recorded per iteration as ``late_s``), and between two iterations the loop does its own
bookkeeping (recorded too: ``gap_s`` in run.json); output tokens are the greedy argmax of a randomly
initialised model, and a request always emits its ``output_tokens`` (no end-of-sequence token, as the
simulator's workload fixes output lengths).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from calibration.llm_runtime import DecoderRuntime, PagedKvCache, SeqWork, operator_rows
from calibration.server import Clock, Inbox
from sim.llm.scheduler import Iteration, Scheduler, Sequences

ITERATION_LOG = ("start_s", "end_s", "size", "prefill_tokens", "decode_tokens", "output_tokens", "kv_tokens_read",
                 "kv_blocks_used", "preempted", "attention_pairs", "late_s")


@dataclass(frozen=True)
class LlmServeConfig:
    """What one LLM server process runs: the decoder, threads, and the scheduler's knobs (as ``llm:``)."""

    model: str = "decoder"
    threads: int = 1
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 256
    enable_chunked_prefill: bool = True
    block_size: int = 16
    kv_blocks: int = 512
    max_model_len: int = 512
    seed: int = 0
    wait: str = "block"
    warmup_requests: int = 0  # default: 2 × max_num_seqs, served before t0
    drain_timeout_s: float = 120.0

    def scheduler(self, seqs: Sequences) -> Scheduler:
        return Scheduler(seqs, max_num_seqs=self.max_num_seqs, max_num_batched_tokens=self.max_num_batched_tokens,
                         block_size=self.block_size, kv_blocks=self.kv_blocks,
                         chunked_prefill=self.enable_chunked_prefill)


@dataclass
class LlmServerRecords:
    """What the server saw: per request when it was received; per iteration its composition and times."""

    received_s: np.ndarray
    iterations: dict[str, list] = field(default_factory=lambda: {k: [] for k in ITERATION_LOG})


class IterationExecutor:
    """Runs the scheduler's iterations on a :class:`DecoderRuntime`: block tables kept in step with the
    scheduler's block counts, each sequence's tokens (prompt, then what it emitted) and how many of them
    are in the KV cache."""

    def __init__(self, runtime: DecoderRuntime, sched: Scheduler, prompts: list[list[int]]) -> None:
        self.runtime, self.sched, self.cache = runtime, sched, runtime.cache
        self.tokens = [list(p) for p in prompts]  # prompt + emitted tokens, per request
        self.cached = [0] * len(prompts)  # tokens of each sequence whose K and V are in the cache

    def run(self, it: Iteration) -> None:
        """Compute ``it`` (formed by ``self.sched.schedule``) on the model."""
        self._sync_blocks()
        sched, seqs = self.sched, self.sched.seqs
        work = []
        if it.decode_tokens:  # every running sequence past its prefill decodes (a prefill-only iteration: none)
            work = [SeqWork(i, [self.tokens[i][-1]], self.cached[i], True) for i in sched.running
                    if i not in sched.prefilling]
            if len(work) != it.decode_tokens:
                raise RuntimeError(f"{len(work)} sequences decode, the scheduler counted {it.decode_tokens}")
        for i, c in it.chunks:
            start = self.cached[i]
            if start != seqs.done[i]:
                raise RuntimeError(f"request {i}: {start} tokens cached, the scheduler says {seqs.done[i]} computed")
            work.append(SeqWork(i, self.tokens[i][start:start + c], start, start + c == seqs.target[i]))
        sampled = iter(self.runtime.step(work))
        for w in work:
            self.cached[w.seq] += len(w.tokens)
            if w.sample:
                self.tokens[w.seq].append(next(sampled))

    def _sync_blocks(self) -> None:
        """Block tables to the scheduler's counts: released for sequences no longer running (finished or
        preempted: a recompute starts from an empty cache), grown for the running ones."""
        running, seqs, cache = self.sched.running, self.sched.seqs, self.cache
        for i in [i for i in cache.tables if i not in running]:
            cache.release(i)
            self.cached[i] = 0
        for i in running:
            cache.resize(i, seqs.blocks[i])

    def release_all(self) -> None:
        for i in list(self.cache.tables):
            self.cache.release(i)


def build_runtime(config: LlmServeConfig) -> DecoderRuntime:
    """The decoder (weights from ``config.seed``) over an empty paged cache of ``config.kv_blocks`` blocks."""
    from calibration.models import build_model

    torch.set_num_threads(config.threads)
    model = build_model(config.model, seed=config.seed).model.eval()
    layer = model.layers[0]
    hidden = model.norm.normalized_shape[0]
    cache = PagedKvCache(len(model.layers), config.kv_blocks, config.block_size, layer.heads, hidden // layer.heads)
    return DecoderRuntime(model, cache)


def prompts_for(input_tokens: np.ndarray, vocab: int, seed: int) -> list[list[int]]:
    """Random prompt token ids of the given lengths (seeded)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, int(n)).tolist() for n in input_tokens]


def serve_iterations(runtime: DecoderRuntime, config: LlmServeConfig, seqs: Sequences, prompts: list[list[int]],
                     inbox: Inbox, records: LlmServerRecords | None, deadline=None) -> Sequences:
    """The serving loop (module docstring) until the inbox is closed and every request it gave is done,
    or ``deadline()`` says stop; ``records`` (None: warm-up) gets every iteration."""
    sched = config.scheduler(seqs)
    executor = IterationExecutor(runtime, sched, prompts)
    clock, q = inbox.clock, inbox.queue
    free_since, log = 0.0, records.iterations if records is not None else None
    while True:
        due = free_since
        while q:
            rid, received = q.popleft()
            sched.add(rid)
            due = max(due, received)
        if not sched.has_work():
            if inbox.closed and not q:
                break
            inbox.wait(0)
            continue
        if deadline is not None and deadline():
            break
        start = clock.now()
        it = sched.schedule(start)
        if it is None:
            raise RuntimeError("the scheduler has waiting requests but formed no iteration")
        executor.run(it)
        end = clock.now()
        sched.complete(it, end)
        free_since = end
        if log is not None:
            for key, value in zip(ITERATION_LOG, (start, end, it.size, it.prefill_tokens, it.decode_tokens,
                                                  it.output_tokens, it.kv_tokens_read, sched.used_blocks,
                                                  it.preempted, it.attention_pairs, start - due)):
                log[key].append(value)
    executor.release_all()
    return seqs


def warm_up(runtime: DecoderRuntime, config: LlmServeConfig, input_tokens: np.ndarray,
            output_tokens: np.ndarray) -> dict:
    """Serve ``warmup_requests`` of the run's own lengths, all at once, before t0 (first calls of the shapes);
    then time the token-wise work per token count (``operator_times``, for from-run profiles)."""
    n = config.warmup_requests or 2 * config.max_num_seqs
    rng = np.random.default_rng(config.seed + 7)
    pick = rng.integers(0, len(input_tokens), n)
    started = time.perf_counter()
    inbox = Inbox(config.wait, Clock(time.perf_counter()))
    for i in range(n):
        inbox.put((i, 0.0))
    inbox.close()
    seqs = Sequences(input_tokens[pick].tolist(), output_tokens[pick].tolist())
    serve_iterations(runtime, config, seqs, prompts_for(input_tokens[pick], runtime.model.tokens.num_embeddings,
                                                         config.seed + 8), inbox, None)
    served = time.perf_counter()
    operators = runtime.operator_times(operator_rows(config.max_num_batched_tokens), samples=3)
    return {"requests": n, "wall_s": round(served - started, 3), "operators": operators,
            "operators_wall_s": round(time.perf_counter() - served, 3)}


def run_llm_server(config: LlmServeConfig, arrival_s: np.ndarray, input_tokens: np.ndarray,
                   output_tokens: np.ndarray, start_delay_s: float = 0.1) -> dict:
    """Serve the requests (arrival times from t0, token counts) on one replica here: the raw records."""
    runtime = build_runtime(config)
    warm = warm_up(runtime, config, input_tokens, output_tokens)
    prompts = prompts_for(input_tokens, runtime.model.tokens.num_embeddings, config.seed + 1)
    seqs = Sequences(input_tokens.tolist(), output_tokens.tolist())
    clock = Clock(time.perf_counter() + start_delay_s)
    inbox = Inbox(config.wait, clock)
    n = arrival_s.size
    records = LlmServerRecords(received_s=np.full(n, np.nan))
    sent_s = np.full(n, np.nan)

    def generate() -> None:
        for i, t in enumerate(arrival_s.tolist()):
            clock.wait_until(t)
            sent_s[i] = clock.now()
            records.received_s[i] = sent_s[i]
            inbox.put((i, sent_s[i]))
        inbox.close()

    stop_at = float(arrival_s.max()) + config.drain_timeout_s
    loadgen = threading.Thread(target=generate, name="capsim-loadgen", daemon=True)
    loadgen.start()
    serve_iterations(runtime, config, seqs, prompts, inbox, records, deadline=lambda: clock.now() > stop_at)
    loadgen.join()
    return {"seqs": seqs, "records": records, "sent_s": sent_s, "warmup": warm, "threads": torch.get_num_threads()}
