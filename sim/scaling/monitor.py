"""The metrics pipeline autoscalers read: periodic scrapes of every replica, windowed on demand.

Each scrape stores, per live replica, cumulative busy instance-seconds, cumulative routed requests,
outstanding and queued requests; plus requests held at the activator. A controller asks for a
window ``[t - lag - window, t - lag]`` and gets per-replica averages computed from the two scrapes
bracketing it, as metrics-server / Prometheus rate() would.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    time_s: float
    per_replica: dict[int, tuple]  # index -> (busy_s, arrived, outstanding, queued[, kv_share, running] on LLM replicas)
    held: int


class Monitor:
    """Scrapes ``snapshot()`` (the engine's per-replica counters and held requests) every ``scrape_s``
    and keeps ``keep_s`` of them; ``latencies`` is the engine's (end, latency) log when a latency
    metric is read."""

    def __init__(self, snapshot, scrape_s: float, keep_s: float,
                 latencies: list[tuple[float, float]] | None = None) -> None:
        self._snapshot = snapshot
        self._latencies = latencies if latencies is not None else []
        self.scrape_s = scrape_s
        self.samples: deque[Sample] = deque(maxlen=int(keep_s / scrape_s) + 4)
        self._times: deque[float] = deque(maxlen=self.samples.maxlen)

    def scrape(self, now: float) -> None:
        per, held = self._snapshot()
        self.samples.append(Sample(now, per, held))
        self._times.append(now)

    def _at_or_before(self, t: float) -> Sample | None:
        k = bisect.bisect_right(self._times, t + 1e-9) - 1
        return self.samples[k] if k >= 0 else None

    def window(self, t_end: float, window_s: float) -> list[Sample]:
        lo = bisect.bisect_left(self._times, t_end - window_s - 1e-9)
        hi = bisect.bisect_right(self._times, t_end + 1e-9)
        return [self.samples[k] for k in range(lo, hi)]

    # ------------------------------------------------------------ per replica
    def utilization(self, index: int, instances: int, t_end: float, window_s: float) -> float | None:
        """Busy share of one replica over the window (None if it has no samples in it)."""
        end = self._at_or_before(t_end)
        start = self._at_or_before(t_end - window_s)
        if end is None or index not in end.per_replica:
            return None
        if start is None or index not in start.per_replica:
            inside = [s for s in self.window(t_end, window_s) if index in s.per_replica]
            start = inside[0]
        dt = end.time_s - start.time_s
        if dt <= 0:
            return None
        return (end.per_replica[index][0] - start.per_replica[index][0]) / (instances * dt)

    def request_rate(self, index: int, t_end: float, window_s: float) -> float | None:
        end = self._at_or_before(t_end)
        inside = [s for s in self.window(t_end, window_s) if index in s.per_replica]
        if end is None or index not in end.per_replica or len(inside) < 2:
            return None
        first = inside[0]
        return (end.per_replica[index][1] - first.per_replica[index][1]) / (end.time_s - first.time_s)

    def mean_of(self, index: int, field: int, t_end: float, window_s: float) -> float | None:
        values = [s.per_replica[index][field] for s in self.window(t_end, window_s) if index in s.per_replica]
        return float(np.mean(values)) if values else None

    # ------------------------------------------------------------ whole service
    def total_concurrency(self, t_end: float, window_s: float) -> float:
        """Mean over the window of all outstanding requests (replicas + activator)."""
        samples = self.window(t_end, window_s)
        if not samples:
            return 0.0
        return float(np.mean([sum(v[2] for v in s.per_replica.values()) + s.held for s in samples]))

    def traffic_seen(self, t_end: float, window_s: float) -> bool:
        """Whether any request arrived in the window: a replica's routed count grew, or requests are held at
        the activator (what a scaler's "without traffic" means, whatever the concurrency samples caught)."""
        samples = self.window(t_end, window_s)
        if not samples:
            return False
        first, last = samples[0], samples[-1]
        return last.held > 0 or any(v[1] > first.per_replica.get(k, (0, 0))[1] for k, v in last.per_replica.items())

    def total_queue(self, t_end: float, window_s: float) -> float:
        samples = self.window(t_end, window_s)
        if not samples:
            return 0.0
        return float(np.mean([sum(v[3] for v in s.per_replica.values()) + s.held for s in samples]))

    def latency_percentile(self, t_end: float, window_s: float, q: float) -> float | None:
        sink = self._latencies
        k0 = bisect.bisect_left(sink, (t_end - window_s, -1.0))
        k1 = bisect.bisect_right(sink, (t_end, float("inf")))
        values = [lat for _, lat in sink[k0:k1]]
        return float(np.percentile(values, q)) if values else None
