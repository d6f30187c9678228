"""Routers: pick the replica for each arriving request among those taking traffic.

A router is a small class with one method, ``choose(replicas) -> Replica``, behind a registry keyed by
the YAML name (``fleet.router``). ``replicas`` is the current list of ready replicas, each exposing
``outstanding`` (queued + in service). Ties are broken by rotating the scan start, so an idle fleet
spreads load as real least-request balancers do rather than piling onto replica 0.
"""

from __future__ import annotations

import numpy as np

from sim.distributions import BufferedStream


class RoundRobin:
    def __init__(self, rng: np.random.Generator) -> None:
        self._next = 0

    def choose(self, replicas):
        replica = replicas[self._next % len(replicas)]
        self._next += 1
        return replica


class Random:
    def __init__(self, rng: np.random.Generator) -> None:
        self._u = BufferedStream(lambda r, n: r.random(n), rng)

    def choose(self, replicas):
        return replicas[int(self._u.next() * len(replicas))]


class LeastOutstanding:
    def __init__(self, rng: np.random.Generator) -> None:
        self._start = 0

    def choose(self, replicas):
        n = len(replicas)
        start = self._start % n
        self._start += 1
        best = replicas[start]
        low = best.outstanding
        for k in range(1, n):
            r = replicas[(start + k) % n]
            if r.outstanding < low:
                best, low = r, r.outstanding
        return best


class PowerOfTwo:
    """Sample two distinct replicas at random; send to the one with fewer outstanding requests."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._u = BufferedStream(lambda r, n: r.random(n), rng)

    def choose(self, replicas):
        n = len(replicas)
        if n == 1:
            return replicas[0]
        a = int(self._u.next() * n)
        b = int(self._u.next() * (n - 1))
        b += b >= a
        ra, rb = replicas[a], replicas[b]
        return rb if rb.outstanding < ra.outstanding else ra


ROUTERS = {
    "round_robin": RoundRobin,
    "random": Random,
    "least_outstanding": LeastOutstanding,
    "power_of_two": PowerOfTwo,
}


def build_router(name: str, rng: np.random.Generator):
    return ROUTERS[name](rng)
