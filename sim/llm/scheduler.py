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
4. **Prefix caching** (``prefix_caching``: vLLM's automatic prefix caching, at the granularity of a
   cached *entry*). A prompt's cacheable beginning is a chain of up to two entries: the full blocks of
   its shared prefix (``prefix_tokens // block_size``, one entry per prefix group), then, in a
   conversation, the full blocks of the earlier turns after that prefix (one entry per conversation,
   grown at the end of each turn to the blocks of its whole context). At admission the chain is
   followed while its entries are cached: the sequence takes them (it needs blocks only for the rest,
   and its prefill starts after them). A shared prefix is cached as soon as a sequence's prefill has
   computed it; a conversation's entry when its turn finishes. An entry no running sequence holds stays
   in the pool's free blocks, evictable; a block taken from the pool evicts the least recently released
   entry when no empty block is left (an entry whose chain lost its first link is never found again and
   ages out). Two sequences that miss the same prefix at once compute it twice, and only the first copy
   is cached (vLLM keeps both).

5. **Disaggregated prefill and decode** (``role``): a ``"prefill"`` replica only prefills. A prompt it has
   computed is *handed off* (:attr:`Scheduler.handoffs`) with its first token, and its own blocks stay
   *parked* until the engine has copied them to a decode replica (:meth:`Scheduler.release_parked`); a
   shared prefix and the prompt's full blocks (a conversation's entry) stay cached here. A ``"decode"``
   replica admits a handed-off sequence FCFS, like any other, when it has blocks for the whole KV and
   room under ``max_num_seqs``, and reserves them: the engine pulls the KV (:attr:`Scheduler.pulls`) and,
   once it has landed (:meth:`Scheduler.land`), the sequence decodes from the next iteration. It does
   not prefill, except a sequence it preempted, which it recomputes itself; it caches nothing.

6. **Priority** (``policy="priority"``, vLLM's ``--scheduling-policy priority``): the waiting queue is
   ordered by (priority, arrival) instead of arrival alone, a preempted sequence rejoining by the same
   key, and the victim of rule 1 is the running sequence of the highest priority value, latest arrival
   (not the most recently admitted). Admission still stops at a head that does not fit.

Cost grows with events, not tokens: a decoding sequence is not touched each iteration. Its state is
kept as of the decode round it was last synced at, and it is looked at again only at the rounds where
it needs a new KV block (one in ``block_size``) or finishes, found in two round-keyed agendas.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from sim.llm.kv_cache import blocks_for


class Sequences:
    """Per-request token state and timestamps, as parallel lists indexed by request id."""

    def __init__(self, input_tokens: list[int], output_tokens: list[int], prefix_group: list[int] | None = None,
                 prefix_tokens: int = 0, conversation: list[int] | None = None, prefix_caching: bool = True,
                 priority: list[int] | None = None) -> None:
        n = len(input_tokens)
        self.priority = list(priority) if priority is not None else [0] * n  # lower: served first (rule 6)
        self.ticket = [-1] * n  # arrival order: numbered when first queued anywhere
        self._tickets = 0
        self.prefix_group = list(prefix_group) if prefix_group is not None else [-1] * n  # -1: no shared prefix
        self.prefix_tokens = prefix_tokens  # tokens of a shared prefix, in front of the prompts that have one
        self.conversation = list(conversation) if conversation is not None else [-1] * n  # -1: a single request
        self.prefix_caching = prefix_caching
        self.held: list[tuple] = [()] * n  # the cached entries whose blocks it holds, in chain order
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

    def queued(self, i: int) -> None:
        """``i`` joins a waiting queue; the first time anywhere, it takes the next arrival number."""
        if self.ticket[i] < 0:
            self.ticket[i] = self._tickets
            self._tickets += 1

    def route_key(self, i: int) -> int:
        """What a prefix-aware router places ``i`` by: its conversation, else its shared prefix (-1: none)."""
        c = self.conversation[i]
        return 2 * c + 1 if c >= 0 else (2 * self.prefix_group[i] if self.prefix_group[i] >= 0 else -1)


class PriorityWaiting:
    """A waiting queue ordered by (priority, arrival): the deque operations the scheduler uses, on a heap.
    ``appendleft`` (a preempted sequence) rejoins by the same key as ``append``."""

    __slots__ = ("_heap", "_seqs")

    def __init__(self, seqs: Sequences) -> None:
        self._heap: list[tuple[int, int, int]] = []
        self._seqs = seqs

    def append(self, i: int) -> None:
        heapq.heappush(self._heap, (self._seqs.priority[i], self._seqs.ticket[i], i))

    appendleft = append

    def popleft(self) -> int:
        return heapq.heappop(self._heap)[2]

    def __getitem__(self, k: int) -> int:
        if k != 0:
            raise IndexError("a priority queue shows its head only")
        return self._heap[0][2]

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)


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
                 kv_blocks: int, chunked_prefill: bool = True, role: str = "both", policy: str = "fcfs") -> None:
        self.seqs = seqs
        self.by_priority = policy == "priority"
        self.role = role  # "both" (prefill and decode), "prefill" or "decode" (disaggregated; rule 5)
        self.handoffs: list[int] = []  # prefill role: prompts computed since the engine last looked
        self.parked: dict[int, int] = {}  # prefill role: handed-off sequence -> its blocks, until copied
        self.pulling: dict[int, None] = {}  # decode role: admitted, blocks reserved, KV being copied in
        self.pulls: list[int] = []  # decode role: admissions whose copy the engine has not started
        self.landed: list[int] = []  # decode role: copies done, decoding from the next iteration
        self.max_seqs, self.budget, self.block_size = max_num_seqs, max_num_batched_tokens, block_size
        self.total_blocks = self.free_blocks = kv_blocks
        self.chunked = chunked_prefill
        self.waiting: deque[int] | PriorityWaiting = PriorityWaiting(seqs) if self.by_priority else deque()
        self.running: dict[int, None] = {}  # admission order
        self.prefilling: dict[int, None] = {}  # running sequences whose prefill is not complete
        self.decoding = 0
        self.round = 0  # decode rounds completed
        self.kv_sum = 0  # KV tokens of the decoding sequences, as of ``round``
        self._grow_at: dict[int, list[tuple[int, int]]] = {}  # round -> (request, generation) needing a block
        self._finish_at: dict[int, list[tuple[int, int]]] = {}  # round -> (request, generation) finishing
        self._admissions = 0
        self.caching = seqs.prefix_caching and role != "decode"
        self.prefix_blocks = seqs.prefix_tokens // block_size if self.caching else 0  # a shared prefix's entry
        self.size: dict[tuple, int] = {}  # cached entry -> its blocks
        self.refs: dict[tuple, int] = {}  # cached entry -> running sequences holding it
        self.evictable: OrderedDict[tuple, None] = OrderedDict()  # entries no one holds, least recent first
        self.evictable_blocks = 0

    # ------------------------------------------------------------ state
    def add(self, i: int) -> None:
        """A new request joins the waiting queue (FCFS, or by priority: rule 6)."""
        self.seqs.queued(i)
        self.waiting.append(i)

    def has_work(self) -> bool:
        """Sequences to run, or KV being copied in or out (a draining replica waits for those too)."""
        return bool(self.running or self.waiting or self.landed or self.pulling or self.parked)

    def release_parked(self, i: int) -> None:
        """Prefill role: ``i``'s KV has been copied out; its parked blocks are free."""
        self.free_blocks += self.parked.pop(i)

    def land(self, i: int) -> None:
        """Decode role: ``i``'s KV has been copied in; it decodes from the next iteration."""
        self.landed.append(i)

    @property
    def used_blocks(self) -> int:
        return self.total_blocks - self.free_blocks

    def _take(self, n: int) -> None:
        """Take ``n`` of the free blocks (``n`` ≤ free), evicting the least recently released cached entries
        while too few free blocks are empty."""
        empty = self.free_blocks - self.evictable_blocks
        while empty < n:
            key, _ = self.evictable.popitem(last=False)
            freed = self.size.pop(key)
            del self.refs[key]
            self.evictable_blocks -= freed
            empty += freed
        self.free_blocks -= n

    def _hold(self, i: int, key: tuple) -> None:
        """``i`` holds the cached entry ``key``: an evictable one leaves the free blocks."""
        if not self.refs[key]:
            del self.evictable[key]
            self.evictable_blocks -= self.size[key]
            self.free_blocks -= self.size[key]
        self.refs[key] += 1
        self.seqs.held[i] += (key,)

    def _release(self, i: int) -> None:
        """Give back the blocks ``i`` holds: its own, and its holds on cached entries."""
        seqs = self.seqs
        self.free_blocks += seqs.blocks[i]
        seqs.blocks[i] = 0
        for key in seqs.held[i]:
            self.refs[key] -= 1
            if not self.refs[key]:
                self.evictable[key] = None
                self.evictable_blocks += self.size[key]
                self.free_blocks += self.size[key]
        seqs.held[i] = ()

    def _held(self, i: int) -> int:
        """Blocks covering ``i``'s KV: its own and those of the cached entries it holds."""
        return self.seqs.blocks[i] + sum(self.size[k] for k in self.seqs.held[i])

    def _chain(self, i: int) -> list[tuple]:
        """The cache entries a prompt of ``i`` starts with, in order: its shared prefix, its conversation."""
        if not self.caching:
            return []
        seqs, chain = self.seqs, []
        if self.prefix_blocks and seqs.prefix_group[i] >= 0:
            chain.append(("prefix", seqs.prefix_group[i]))
        if seqs.conversation[i] >= 0:
            chain.append(("conversation", seqs.conversation[i]))
        return chain

    # ------------------------------------------------------------ forming an iteration
    def schedule(self, now: float) -> Iteration | None:
        """The next iteration (None when there is nothing to run)."""
        it = Iteration()
        for i in self.landed:
            del self.pulling[i]
            self._admissions += 1
            self.seqs.admitted[i] = self._admissions
            self.running[i] = None
            self._start_decoding(i)
        self.landed.clear()
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
        while waiting and budget > 0 and len(running) + len(self.pulling) < self.max_seqs:
            i = waiting[0]
            need = blocks_for(seqs.target[i], self.block_size)
            if self.role == "decode" and seqs.done[i] == seqs.target[i]:  # handed off: its KV is copied in
                if need > self.free_blocks:
                    break
                waiting.popleft()
                self._take(need)
                seqs.blocks[i] = need
                self.pulling[i] = None
                self.pulls.append(i)
                continue
            hits, cached = [], 0  # the cached entries its prompt starts with: computed, not to compute again
            for key in self._chain(i):
                if key not in self.size or (cached + self.size[key]) * self.block_size >= seqs.target[i]:
                    break  # not cached, or more than the prompt (at least its last token is computed)
                hits.append(key)
                cached += self.size[key]
            pinned = sum(self.size[k] for k in hits if not self.refs[k])  # they leave the free blocks
            need -= cached
            if need + pinned > self.free_blocks or (whole and seqs.target[i] - cached * self.block_size > budget):
                break
            waiting.popleft()
            for key in hits:
                self._hold(i, key)
            if cached:
                seqs.done[i] = cached * self.block_size
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
                victim = self._victim()
                self._preempt(victim)
                it.preempted += 1
                if victim == i:
                    break
            else:
                self._take(1)
                seqs.blocks[i] += 1
                if r + bs <= self._last_round(i):
                    self._grow_at.setdefault(r + bs, []).append((i, g))

    def _victim(self) -> int:
        """The running sequence preempted first: the most recently admitted, or by priority the highest
        priority value, latest arrival (rule 6)."""
        if not self.by_priority:
            return next(reversed(self.running))
        priority, ticket = self.seqs.priority, self.seqs.ticket
        return max(self.running, key=lambda i: (priority[i], ticket[i]))

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
            if cached_upto and seqs.done[i] - c < cached_upto <= seqs.done[i] and seqs.prefix_group[i] >= 0:
                self._cache_prefix(i)
            if seqs.done[i] == seqs.target[i]:
                self._prefilled(i, now, finished)
        return finished

    def _cache_prefix(self, i: int) -> None:
        """``i`` has computed the full blocks of its shared prefix: cache them, held by ``i``, unless that
        prefix is cached already (its own copy then stays its own)."""
        key = ("prefix", self.seqs.prefix_group[i])
        if key in self.size or key in self.seqs.held[i]:
            return
        self._cache_own(i, key, self.prefix_blocks)

    def _cache_own(self, i: int, key: tuple, blocks: int) -> None:
        """``blocks`` of ``i``'s own blocks become the cached entry ``key``, held by ``i``."""
        self.size[key], self.refs[key] = blocks, 1
        self.seqs.held[i] += (key,)
        self.seqs.blocks[i] -= blocks

    def _cache_conversation(self, i: int, kv_tokens: int) -> None:
        """A conversation's turn finished (or, on a prefill replica, its prompt was computed): the full
        blocks of its ``kv_tokens`` after the shared prefix become the conversation's entry (grown from the
        one it held), for its next turn. Not when its chain is broken (its shared prefix is its own copy,
        not the cached one)."""
        seqs = self.seqs
        key, chain = ("conversation", seqs.conversation[i]), self._chain(i)
        if not chain or chain[-1] != key or any(k not in seqs.held[i] for k in chain[:-1]):
            return
        prefix = self.prefix_blocks if len(chain) == 2 else 0
        full = kv_tokens // self.block_size - prefix
        if key in seqs.held[i]:
            grow = full - self.size[key]
            if grow > 0:
                self.size[key] = full
                seqs.blocks[i] -= grow
        elif key not in self.size and full > 0:
            self._cache_own(i, key, full)

    def _prefilled(self, i: int, now: float, finished: list[int]) -> None:
        seqs = self.seqs
        del self.prefilling[i]
        seqs.emitted[i] += 1
        last = seqs.emitted[i] == seqs.output_tokens[i]
        if self.role == "prefill" and not last:
            self._hand_off(i)  # its first token reaches the client from the decode replica
            return
        if seqs.first_token_s[i] != seqs.first_token_s[i]:  # NaN: its first token
            seqs.first_token_s[i] = now
        if last:
            self._finish(i, now, finished)
            return
        self._start_decoding(i)

    def _hand_off(self, i: int) -> None:
        """Prefill role: ``i``'s prompt is computed. Its prompt's full blocks become its conversation's
        entry (for the next turn's prefill here); its own blocks park until the engine has copied them."""
        seqs = self.seqs
        del self.running[i]
        if self.caching and seqs.conversation[i] >= 0:
            self._cache_conversation(i, seqs.target[i])
        self.parked[i] = seqs.blocks[i]
        seqs.blocks[i] = 0
        self._release(i)
        self.handoffs.append(i)

    def _start_decoding(self, i: int) -> None:
        """``i`` holds the KV of its ``target`` tokens and has emitted a token: it decodes from the next round."""
        seqs = self.seqs
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
        if self.caching and seqs.conversation[i] >= 0:
            self._cache_conversation(i, seqs.input_tokens[i] + seqs.output_tokens[i] - 1)
        self._release(i)
        seqs.end_s[i] = now
        finished.append(i)
