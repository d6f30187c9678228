"""Closed forms of the offline and streaming architectures, which their simulations are checked against.

* A static offline fleet: K replicas, one work queue of ⌈N/B⌉ batches of B items (the last one partly
  empty), every replica ready after the same cold start C and every batch taking S(B): the last batch
  ends after C + ⌈N/(K·B)⌉·S(B) (⌈⌈N/B⌉/K⌉ = ⌈N/(KB)⌉ rounds; the last round's partial batch may be
  quicker, so the simulated makespan is this or up to one batch time less).
* A stream: events at λ/s into a buffer drained at μ/s has a consumer lag that grows at (λ − μ)⁺ per
  second; a consumer that pauses p seconds every checkpoint interval T, after its batch in flight, keeps
  a share 1 − p/T of its capacity.
"""

from __future__ import annotations

import math


def offline_rounds(items: int, replicas: int, batch_size: int) -> int:
    """Rounds of batches a static fleet runs: ⌈items / (replicas · batch_size)⌉."""
    return math.ceil(items / (replicas * batch_size))


def offline_makespan_s(items: int, replicas: int, batch_size: int, batch_s: float, cold_start_s: float = 0.0) -> float:
    """Time from submission to the last item of a static fleet with equal cold starts and batch times."""
    return cold_start_s + offline_rounds(items, replicas, batch_size) * batch_s


def offline_replicas_needed(items: int, batch_size: int, batch_s: float, deadline_s: float,
                            cold_start_s: float = 0.0) -> int | None:
    """Fewest replicas whose makespan (:func:`offline_makespan_s`) meets ``deadline_s``; None when even one
    round of batches after the cold start is too late."""
    rounds = math.floor((deadline_s - cold_start_s) / batch_s + 1e-9)
    if rounds < 1:
        return None
    return math.ceil(math.ceil(items / batch_size) / rounds)


def lag_growth_events_per_s(rate_per_s: float, capacity_per_s: float) -> float:
    """How fast the consumer lag grows: the arrival rate beyond the consumers' capacity, (λ − μ)⁺."""
    return max(rate_per_s - capacity_per_s, 0.0)


def checkpoint_share(interval_s: float | None, pause_s: float) -> float:
    """Share of a busy consumer's time left for events when it pauses ``pause_s`` every ``interval_s``."""
    return 1.0 if not interval_s else 1.0 - pause_s / interval_s
