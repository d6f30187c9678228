"""The iteration-level (continuous batching) scheduler of one LLM replica, vLLM-style, without a clock.

Each iteration :meth:`Scheduler.schedule` forms a batch and, when it has run, :meth:`Scheduler.complete`
applies it. Rules (vLLM's, with the differences written down in docs/llm.md):

1. **Decodes first.** Every running sequence past its prefill decodes one token; a decode that starts a
   new KV block takes one from the pool. With no block free, the most recently admitted running sequence
   is **preempted** (recompute: its blocks are freed, it goes back to the front of the waiting queue and
   later prefills its prompt plus the tokens it had generated), until the block is found or the sequence
   itself was the one preempted.
2. **Then prefill chunks**, out of what is left of ``max_num_batched_tokens``: running sequences whose
   prompt is part done first, then waiting ones in FCFS order, each admitted while fewer than
   ``max_num_seqs`` run and the pool has blocks for its whole prompt (a head that does not fit blocks
   the queue). No admission in an iteration that preempted, unless nothing else would run. Without
   chunked prefill an iteration either prefills whole prompts (when any can be admitted) or decodes.
3. A prefill that completes emits the sequence's next token (its first, unless it is a recompute); a
   sequence is finished when it has emitted its ``output_tokens``.
4. **Prefix caching** (``prefix_tokens`` > 0: vLLM's automatic prefix caching, at the granularity of
   a shared prefix). The full blocks of a shared prefix (``prefix_tokens // block_size``) that a sequence
   has computed are cached once its prefill passes them, and shared: a later sequence with the same
   prefix starts its prefill after them and holds only its own blocks. A cached prefix no running
   sequence uses stays in the pool's free blocks, evictable; a block taken from the pool evicts the least
   recently used such prefix when no empty block is left. Two sequences that miss at the same time each
   compute their own copy, and only the first is cached (vLLM keeps both).

Cost grows with events, not tokens: a decoding sequence is not touched each iteration. Its state is
kept as of the decode round it was last synced at, and it is looked at again only at the rounds where
it needs a new KV block (one in ``block_size``) or finishes, found in two round-keyed agendas.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from sim.llm.kv_cache import blocks_for


class Sequences:
    """Per-request token state and timestamps, as parallel lists indexed by request id."""

    def __init__(self, input_tokens: list[int], output_tokens: list[int], prefix_group: list[int] | None = None,
                 prefix_tokens: int = 0) -> None:
        n = len(input_tokens)
        self.prefix_group = list(prefix_group) if prefix_group is not None else [-1] * n  # -1: no shared prefix
        self.prefix_tokens = prefix_tokens  # 0: no prefix caching
        self.shared = [-1] * n  # the cached prefix whose blocks it holds (-1: none)
        self.cached_tokens = [0] * n  # prompt tokens taken from the prefix cache, over its admissions
        self.input_tokens = list(input_tokens)
        self.output_tokens = list(output_tokens)
        self.target = list(input_tokens)  # tokens the current prefill computes (prompt + tokens already emitted)
        self.done = [0] * n  # of those, computed so far
        self.emitted = [0] * n  # output tokens, as of round ``synced``
        self.kv = [0] * n  # tokens in the KV cache, as of round ``synced``
        self.synced = [0] * n  # decode round the two above are as of
        self.blocks = [0] * n
        self.generation = [0] * n  # bumped on preemption: agenda entries of older generations are stale
        self.admitted = [0] * n  # admission order (FCFS ties, preemption victims)
        self.start_s = [math.nan] * n  # first scheduled
        self.first_token_s = [math.nan] * n
        self.end_s = [math.nan] * n
        self.first_batch = [0] * n  # sequences in the iteration that first scheduled it
        self.preemptions = [0] * n


@dataclass
class Iteration:
    """One scheduled iteration: what the iteration-time model reads and what :meth:`Scheduler.complete` applies."""

    decode_tokens: int = 0
    prefill_tokens: int = 0
    kv_tokens_read: int = 0
    attention_pairs: int = 0
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (request, prompt tokens computed)
    output_tokens: int = 0  # decodes + prefills that complete
    preempted: int = 0

    @property
    def size(self) -> int:
        return self.decode_tokens + len(self.chunks)


class Scheduler:
    """One replica's waiting queue, running set and KV block pool."""

    def __init__(self, seqs: Sequences, *, max_num_seqs: int, max_num_batched_tokens: int, block_size: int,
                 kv_blocks: int, chunked_prefill: bool = True) -> None:
        self.seqs = seqs
        self.max_seqs, self.budget, self.block_size = max_num_seqs, max_num_batched_tokens, block_size
        self.total_blocks = self.free_blocks = kv_blocks
        self.chunked = chunked_prefill
        self.waiting: deque[int] = deque()
        self.running: dict[int, None] = {}  # admission order
        self.prefilling: dict[int, None] = {}  # running sequences whose prefill is not complete
        self.decoding = 0
        self.round = 0  # decode rounds completed
        self.kv_sum = 0  # KV tokens of the decoding sequences, as of ``round``
        self._grow_at: dict[int, list[tuple[int, int]]] = {}  # round -> (request, generation) needing a block
        self._finish_at: dict[int, list[tuple[int, int]]] = {}  # round -> (request, generation) finishing
        self._admissions = 0
        self.prefix_blocks = seqs.prefix_tokens // block_size  # full blocks of a shared prefix: what is cached
        self.cached: dict[int, int] = {}  # prefix group -> running sequences holding its cached blocks
        self.evictable: OrderedDict[int, None] = OrderedDict()  # cached prefixes no one holds, least recent first

    # ------------------------------------------------------------ state
    def add(self, i: int) -> None:
        """A new request joins the waiting queue (FCFS)."""
        self.waiting.append(i)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def used_blocks(self) -> int:
        return self.total_blocks - self.free_blocks

    @property
    def cached_blocks(self) -> int:
        """Blocks holding cached prefixes, in use or evictable."""
        return len(self.cached) * self.prefix_blocks

    def _take(self, n: int) -> None:
        """Take ``n`` of the free blocks (``n`` ≤ free), evicting least recently used cached prefixes while
        too few free blocks are empty."""
        empty = self.free_blocks - len(self.evictable) * self.prefix_blocks
        while empty < n:
            group, _ = self.evictable.popitem(last=False)
            del self.cached[group]
            empty += self.prefix_blocks
        self.free_blocks -= n

    def _release(self, i: int) -> None:
        """Give back the blocks ``i`` holds: its own, and its hold on a cached prefix."""
        seqs = self.seqs
        self.free_blocks += seqs.blocks[i]
        seqs.blocks[i] = 0
        group = seqs.shared[i]
        if group >= 0:
            seqs.shared[i] = -1
            self.cached[group] -= 1
            if not self.cached[group]:
                self.evictable[group] = None
                self.free_blocks += self.prefix_blocks

    def _held(self, i: int) -> int:
        """Blocks covering ``i``'s KV: its own and those of the cached prefix it holds."""
        return self.seqs.blocks[i] + (self.prefix_blocks if self.seqs.shared[i] >= 0 else 0)

    # ------------------------------------------------------------ forming an iteration
    def schedule(self, now: float) -> Iteration | None:
        """The next iteration (None when there is nothing to run)."""
        it = Iteration()
        if not self.chunked and self._admit(it, now, whole=True):
            return self._stamp(it)  # a prefill-only iteration
        if self.decoding:
            due = self._grow_at.pop(self.round + 1, None)
            if due:
                self._grow(due, it)
            it.decode_tokens = it.output_tokens = self.decoding
            it.kv_tokens_read = it.attention_pairs = self.kv_sum + self.decoding
        if self.chunked:
            budget = self.budget - it.decode_tokens
            for i in self.prefilling:
                if budget == 0:
                    break
                budget -= self._chunk(it, i, budget)
            if not it.preempted or not it.size:  # admitting into memory just freed would thrash, unless idle
                self._admit(it, now, whole=False, budget=budget)
        elif not it.size:  # every decode was preempted: prefill instead
            self._admit(it, now, whole=True)
        return self._stamp(it) if it.size else None

    def _stamp(self, it: Iteration) -> Iteration:
        seqs, size = self.seqs, it.size
        for i, _ in it.chunks:
            if not seqs.first_batch[i]:
                seqs.first_batch[i] = size
        return it

    def _chunk(self, it: Iteration, i: int, budget: int) -> int:
        seqs = self.seqs
        done = seqs.done[i]
        c = min(seqs.target[i] - done, budget)
        it.chunks.append((i, c))
        it.prefill_tokens += c
        it.kv_tokens_read += done + c
        it.attention_pairs += c * done + c * (c + 1) // 2
        if done + c == seqs.target[i]:
            it.output_tokens += 1
        return c

    def _admit(self, it: Iteration, now: float, *, whole: bool, budget: int | None = None) -> bool:
        """Admit waiting sequences FCFS while they fit; True if any was."""
        seqs, waiting, running = self.seqs, self.waiting, self.running
        budget = self.budget if budget is None else budget
        admitted = False
        while waiting and budget > 0 and len(running) < self.max_seqs:
            i = waiting[0]
            need = blocks_for(seqs.target[i], self.block_size)
            group = seqs.prefix_group[i] if self.prefix_blocks else -1
            hit = group in self.cached  # its prefix's blocks are cached: computed, not to compute again
            pinned = hit and group in self.evictable  # they leave the free blocks while it holds them
            if hit:
                need -= self.prefix_blocks
            if need + (self.prefix_blocks if pinned else 0) > self.free_blocks or (
                    whole and seqs.target[i] - (self.prefix_blocks * self.block_size if hit else 0) > budget):
                break
            waiting.popleft()
            if hit:
                if pinned:
                    del self.evictable[group]
                    self.free_blocks -= self.prefix_blocks
                self.cached[group] += 1
                seqs.shared[i] = group
                seqs.done[i] = self.prefix_blocks * self.block_size
                seqs.cached_tokens[i] += seqs.done[i]
            self._take(need)
            seqs.blocks[i] = need
            self._admissions += 1
            seqs.admitted[i] = self._admissions
            running[i] = None
            self.prefilling[i] = None
            if seqs.start_s[i] != seqs.start_s[i]:  # NaN: first time scheduled
                seqs.start_s[i] = now
            budget -= self._chunk(it, i, budget)
            admitted = True
        return admitted

    def _grow(self, due: list[tuple[int, int]], it: Iteration) -> None:
        """Give each sequence starting a new block this round one block, oldest first, preempting the
        most recently admitted running sequence while none is free."""
        seqs, gen, bs = self.seqs, self.seqs.generation, self.block_size
        due = sorted((e for e in due if gen[e[0]] == e[1]), key=lambda e: seqs.admitted[e[0]])
        r = self.round + 1
        for i, g in due:
            if gen[i] != g:  # preempted earlier in this loop
                continue
            while not self.free_blocks:
                victim = next(reversed(self.running))
                self._preempt(victim)
                it.preempted += 1
                if victim == i:
                    break
            else:
                self._take(1)
                seqs.blocks[i] += 1
                if r + bs <= self._last_round(i):
                    self._grow_at.setdefault(r + bs, []).append((i, g))

    def _last_round(self, i: int) -> int:
        seqs = self.seqs
        return seqs.synced[i] + seqs.output_tokens[i] - seqs.emitted[i]

    def _preempt(self, i: int) -> None:
        """Recompute preemption: free its blocks; it prefills prompt + emitted tokens again later."""
        seqs = self.seqs
        del self.running[i]
        if i in self.prefilling:
            del self.prefilling[i]
        else:
            elapsed = self.round - seqs.synced[i]
            seqs.emitted[i] += elapsed
            self.kv_sum -= seqs.kv[i] + elapsed
            self.decoding -= 1
        seqs.target[i] = seqs.input_tokens[i] + seqs.emitted[i]
        seqs.done[i] = 0
        self._release(i)
        seqs.generation[i] += 1
        seqs.preemptions[i] += 1
        self.waiting.appendleft(i)

    # ------------------------------------------------------------ applying an iteration
    def complete(self, it: Iteration, now: float) -> list[int]:
        """Apply ``it``, which ended at ``now``; the requests that finished."""
        seqs, finished = self.seqs, []
        if it.decode_tokens:
            self.round += 1
            self.kv_sum += it.decode_tokens
            due = self._finish_at.pop(self.round, None)
            if due:
                gen = seqs.generation
                for i, g in due:
                    if gen[i] == g:
                        elapsed = self.round - seqs.synced[i]
                        seqs.emitted[i] += elapsed
                        self.kv_sum -= seqs.kv[i] + elapsed
                        self.decoding -= 1
                        self._finish(i, now, finished)
        cached_upto = self.prefix_blocks * self.block_size
        for i, c in it.chunks:
            seqs.done[i] += c
            if cached_upto and seqs.done[i] - c < cached_upto <= seqs.done[i]:
                self._cache_prefix(i)
            if seqs.done[i] == seqs.target[i]:
                self._prefilled(i, now, finished)
        return finished

    def _cache_prefix(self, i: int) -> None:
        """``i`` has computed the full blocks of its shared prefix: cache them, held by ``i``, unless that
        prefix is cached already (its own copy then stays its own)."""
        seqs, group = self.seqs, self.seqs.prefix_group[i]
        if group < 0 or group in self.cached or seqs.shared[i] >= 0:
            return
        self.cached[group] = 1
        seqs.shared[i] = group
        seqs.blocks[i] -= self.prefix_blocks

    def _prefilled(self, i: int, now: float, finished: list[int]) -> None:
        seqs = self.seqs
        del self.prefilling[i]
        seqs.emitted[i] += 1
        if seqs.first_token_s[i] != seqs.first_token_s[i]:  # NaN: its first token
            seqs.first_token_s[i] = now
        if seqs.emitted[i] == seqs.output_tokens[i]:
            self._finish(i, now, finished)
            return
        r, kv, g = self.round, seqs.target[i], seqs.generation[i]
        seqs.synced[i], seqs.kv[i] = r, kv
        self.kv_sum += kv
        self.decoding += 1
        self._finish_at.setdefault(self._last_round(i), []).append((i, g))
        grow = r + 1 + self._held(i) * self.block_size - kv  # the round whose token opens a new block
        if grow <= self._last_round(i):
            self._grow_at.setdefault(grow, []).append((i, g))

    def _finish(self, i: int, now: float, finished: list[int]) -> None:
        seqs = self.seqs
        del self.running[i]
        self._release(i)
        seqs.end_s[i] = now
        finished.append(i)
