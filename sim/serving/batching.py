"""Triton-style dynamic batching reduced to a table, the one rule the simulator and the real
benchmark server (``calibration/server.py``) both follow.

When an instance is free and ``n`` requests wait, the batch to send at once is the largest preferred
size <= ``n`` (with no preferred sizes: ``max_batch_size`` once ``n`` reaches it); 0 means wait for
more until the oldest request has waited ``max_queue_delay_s``, then send ``min(n, max_batch_size)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def size_now_table(max_batch_size: int, preferred: Sequence[int]) -> list[int]:
    """For ``n`` waiting requests (0 <= n <= max), the batch to send at once; 0 means wait for more."""
    targets = sorted(set(preferred)) or [max_batch_size]
    return [max((p for p in targets if p <= n), default=0) for n in range(max_batch_size + 1)]


@dataclass
class BatchPolicy:
    """A scenario's ``batching`` section as the engine reads it."""

    max_batch_size: int
    max_queue_delay_s: float
    size_now: list[int]
    max_queue_size: int
    timeout_s: float | None

    @classmethod
    def from_scenario(cls, batching) -> BatchPolicy:
        maxb = batching.max_batch_size
        return cls(maxb, batching.max_queue_delay_s, size_now_table(maxb, batching.preferred_batch_sizes),
                   batching.max_queue_size, batching.timeout_s)
