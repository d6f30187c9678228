"""Routers: pick the replica for each arriving request among those taking traffic.

A router is a small class with one method, ``choose(replicas) -> Replica``, behind a registry keyed by
the YAML name (``fleet.router``). ``replicas`` is the current list of ready replicas, each exposing
``outstanding`` (queued + in service). Ties are broken by rotating the scan start, so an idle fleet
spreads load as real least-request balancers do rather than piling onto replica 0.
"""

from __future__ import annotations

import math

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

    def choose(self, replicas):  # lowest(replicas, outstanding), written out: the request engine's hot path
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

    def lowest(self, replicas, key):
        """The replica with the smallest ``key(replica)``, ties to the first from the rotating scan start."""
        n = len(replicas)
        start = self._start % n
        self._start += 1
        return min((replicas[(start + k) % n] for k in range(n)), key=key)


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


class PrefixAffinity:
    """Requests with the same shared prefix (``workload.shared_prefix``) go to the same replica, so its
    prefix cache serves them: rendezvous (highest-random-weight) hashing of the prefix over the ready
    replicas, which moves only the prefixes of a replica that leaves or joins; with bounded load (the
    first replica in the prefix's order whose outstanding requests are under ``LOAD_BOUND`` × the mean,
    the new one counted: consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam 2018).
    A request without a prefix, or a request-level one, goes to the least outstanding replica."""

    LOAD_BOUND = 1.25
    keyed = True  # the token-level engine passes each request's prefix group

    def __init__(self, rng: np.random.Generator) -> None:
        self._least = LeastOutstanding(rng)

    def choose(self, replicas, key: int = -1):
        if key < 0 or len(replicas) == 1:
            return self._least.choose(replicas)
        cap = math.ceil(self.LOAD_BOUND * (sum(r.outstanding for r in replicas) + 1) / len(replicas))
        ranked = sorted(replicas, key=lambda r: rendezvous_weight(key, r.index), reverse=True)
        return next((r for r in ranked if r.outstanding < cap), ranked[0])


class LeastKvCache:
    """The replica with the smallest share of its KV cache in use (a token-level replica's scheduler;
    ties, and request-level replicas, by fewest outstanding requests): llm-d's KV-cache-utilisation
    scorer, which steers long sequences away from replicas about to preempt."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._least = LeastOutstanding(rng)

    def choose(self, replicas):
        if getattr(replicas[0], "sched", None) is None:
            return self._least.choose(replicas)
        return self._least.lowest(replicas, lambda r: (r.sched.used_blocks / r.sched.total_blocks, r.outstanding))


def rendezvous_weight(key: int, replica: int) -> int:
    """A replica's weight for ``key``: a 64-bit mix (splitmix64) of both, the same in every run."""
    z = (key * 0x9E3779B97F4A7C15 + replica * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


MASK64 = (1 << 64) - 1

ROUTERS = {
    "round_robin": RoundRobin,
    "random": Random,
    "least_outstanding": LeastOutstanding,
    "power_of_two": PowerOfTwo,
    "prefix_affinity": PrefixAffinity,
    "least_kv_cache": LeastKvCache,
}


def build_router(name: str, rng: np.random.Generator):
    return ROUTERS[name](rng)
