"""A stream's buffer: its partitions (or one shared queue), their offsets, and which consumer reads which.

Per partition the topic keeps the events not yet taken by a consumer (a FIFO of event ids), every event id in
write order (offsets), and three counters: written, processed and committed. Kafka's consumer lag is
written − committed. Partitions are dealt round robin over the ready consumers in index order; a shared queue
(``partitions: None``) is one partition every consumer reads.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from sim.serving.engine import Replica


class Topic:
    """Partitions of events, their offsets and owners (``sim.architectures.streaming`` drives it)."""

    def __init__(self, events: int, partitions: int | None, capacity_events: int, commit_interval_s: float) -> None:
        n = partitions or 1
        self.shared = partitions is None
        self.capacity = capacity_events or math.inf
        self.commit_s = 0.0 if self.shared else commit_interval_s  # a shared queue acknowledges every batch
        self.parts: list[deque[int]] = [deque() for _ in range(n)]
        self.offsets: list[list[int]] = [[] for _ in range(n)]
        self.written, self.processed, self.committed = [0] * n, [0] * n, [0] * n
        self.owners: list[list[Replica]] = [[] for _ in range(n)]
        self.owned: dict[int, list[int]] = {}
        self.part_of = np.full(events, -1, dtype=np.int32)
        self.written_s = np.full(events, np.nan)

    def __len__(self) -> int:
        return len(self.parts)

    # ------------------------------------------------------------ producer side
    def full(self, p: int) -> bool:
        return len(self.parts[p]) >= self.capacity

    def write(self, i: int, p: int, now: float) -> list[Replica]:
        """Append event ``i`` to partition ``p``; the consumers that read it."""
        self.parts[p].append(i)
        self.offsets[p].append(i)
        self.written[p] += 1
        self.part_of[i], self.written_s[i] = p, now
        return self.owners[p]

    # ------------------------------------------------------------ consumer side
    def assign(self, consumers: list[Replica]) -> None:
        """Deal the partitions over ``consumers`` (a rebalance); what was processed is committed first, as a
        consumer does when partitions are revoked."""
        if self.commit_s:
            self.committed = list(self.processed)
        ordered = sorted(consumers, key=lambda r: r.index)
        self.owned = {r.index: [] for r in ordered}
        for p in range(len(self.parts)):
            self.owners[p] = ordered if self.shared or not ordered else [ordered[p % len(ordered)]]
            for r in self.owners[p]:
                self.owned[r.index].append(p)

    def pending(self, rep: Replica) -> int:
        """Events waiting in the partitions ``rep`` reads."""
        return sum(len(self.parts[p]) for p in self.owned.get(rep.index, ()))

    def oldest(self, rep: Replica) -> tuple[int, float]:
        """The partition of ``rep`` whose head event was written first, and that time."""
        best, when = -1, math.inf
        for p in self.owned[rep.index]:
            q = self.parts[p]
            if q and self.written_s[q[0]] < when:
                best, when = p, self.written_s[q[0]]
        return best, when

    def take(self, rep: Replica, size: int) -> list[int]:
        """``size`` events from the partitions of ``rep``, oldest first."""
        owned = self.owned[rep.index]
        if len(owned) == 1:
            q = self.parts[owned[0]]
            return [q.popleft() for _ in range(size)]
        return [self.parts[self.oldest(rep)[0]].popleft() for _ in range(size)]

    def done(self, batch: list[int]) -> None:
        """A batch was processed: committed at once, or counted for the consumer's next commit."""
        counts = self.processed if self.commit_s else self.committed
        for i in batch:
            counts[self.part_of[i]] += 1

    def commit(self, rep: Replica) -> None:
        """``rep`` commits the offsets of its partitions."""
        for p in self.owned.get(rep.index, ()):
            self.committed[p] = self.processed[p]

    # ------------------------------------------------------------ lag
    def lags(self) -> list[int]:
        """Per partition: events written minus events committed (Kafka's consumer lag)."""
        return [w - c for w, c in zip(self.written, self.committed)]

    def lag_s(self, now: float, arrival_s: np.ndarray) -> float:
        """Age of the oldest event written and not yet committed (0 when there is none)."""
        oldest = [arrival_s[ids[c]] for ids, c, w in zip(self.offsets, self.committed, self.written) if c < w]
        return now - min(oldest) if oldest else 0.0

    def buffered(self) -> int:
        return sum(len(q) for q in self.parts)
