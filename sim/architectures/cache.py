"""Result caching: a cache in front of the model, shared or one per replica.

Each request carries a key: drawn i.i.d. from a Zipf law over K keys (``cache.keys.source: zipf``, key 0
the most popular), or read from a column of the arrival trace (``source: trace``). Timeline of a request::

    arrive -> [per_replica: the router picks a replica] -> lookup (lookup_s)
           -> hit: answered at arrival + lookup_s, no batch (outcome served, batch_size 0)
           -> miss: to the model (the engine's queue, from arrival + lookup_s) -> served -> result stored

A result is stored when the model answers, so requests for a key already on its way to the model miss too.
Policies (:data:`POLICIES`): LRU, LFU (in-cache counts, ties to the least recent) and TTL (an entry expires
``ttl_s`` after it was stored; when full, the oldest entry goes). A per-replica cache belongs to its
replica: a new replica (scaled up, or restarted after a failure) starts empty. The hit ratio is not an
input: it comes out of the simulation (``cache_hit`` per request, ``cache_hit_ratio`` over time and in the
summary), beside the closed form where one applies (``sim.theory.caches``).
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict

import numpy as np
import pandas as pd

from sim.architectures.online import Architecture
from sim.errors import ScenarioError
from sim.scenario.model import mean_rate_rps
from sim.theory.caches import lru_hit_ratio, ttl_hit_ratio, zipf_popularity
from sim.workload.arrivals import read_table


# ---------------------------------------------------------------- policies
class LruCache:
    """Least recently used goes first."""

    def __init__(self, capacity: int, ttl_s: float | None = None) -> None:
        self.capacity = capacity
        self._entries: OrderedDict = OrderedDict()

    def get(self, key, now: float) -> bool:
        if key not in self._entries:
            return False
        self._entries.move_to_end(key)
        return True

    def put(self, key, now: float) -> None:
        entries = self._entries
        entries[key] = None
        entries.move_to_end(key)
        if len(entries) > self.capacity:
            entries.popitem(last=False)


class LfuCache:
    """Least frequently used goes first (counts of the keys in the cache; ties: the least recent)."""

    def __init__(self, capacity: int, ttl_s: float | None = None) -> None:
        self.capacity = capacity
        self._count: dict = {}
        self._by_count: defaultdict[int, OrderedDict] = defaultdict(OrderedDict)
        self._least = 0

    def get(self, key, now: float) -> bool:
        count = self._count.get(key)
        if count is None:
            return False
        same = self._by_count[count]
        del same[key]
        if not same:
            del self._by_count[count]
            if self._least == count:
                self._least = count + 1
        self._count[key] = count + 1
        self._by_count[count + 1][key] = None
        return True

    def put(self, key, now: float) -> None:
        if key in self._count:
            return
        if len(self._count) >= self.capacity:
            same = self._by_count[self._least]
            gone, _ = same.popitem(last=False)
            if not same:
                del self._by_count[self._least]
            del self._count[gone]
        self._count[key] = 1
        self._by_count[1][key] = None
        self._least = 1


class TtlCache:
    """An entry lives ``ttl_s`` from when it was stored; when full, the oldest entry goes."""

    def __init__(self, capacity: int, ttl_s: float) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._expiry: OrderedDict = OrderedDict()

    def get(self, key, now: float) -> bool:
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry <= now:
            del self._expiry[key]
            return False
        return True

    def put(self, key, now: float) -> None:
        entries = self._expiry
        entries.pop(key, None)
        entries[key] = now + self.ttl_s
        if len(entries) > self.capacity:
            entries.popitem(last=False)


POLICIES = {"lru": LruCache, "lfu": LfuCache, "ttl": TtlCache}


# ---------------------------------------------------------------- keys
def request_keys(scenario, count: int, rng: np.random.Generator) -> np.ndarray:
    """One key per request, in arrival order (integers; 0 = the most popular Zipf key)."""
    spec = scenario.cache.keys
    if spec.source == "zipf":
        cdf = np.cumsum(zipf_popularity(spec.distinct_keys, spec.exponent))
        keys = np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right")
        return np.minimum(keys, spec.distinct_keys - 1)
    path = scenario.resolve(scenario.workload.arrivals.path)
    where = f"cache.keys.column = {spec.column!r} of {str(path)!r}"
    frame = read_table(path, where, "trace", error=ScenarioError)
    if spec.column not in frame.columns:
        raise ScenarioError(f"{where}: the trace has no such column")
    codes, _ = pd.factorize(frame[spec.column])
    if (codes[:count] < 0).any():
        row = int(np.flatnonzero(codes[:count] < 0)[0])
        raise ScenarioError(f"{where}: row {row + 1} has no key (every replayed request needs one)")
    return codes[:count]


# ---------------------------------------------------------------- the cache in the simulation
class PinnedRouter:
    """The scenario's router, except that a request whose per-replica cache missed goes back to that replica
    (while it still takes traffic)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.pinned = None

    def choose(self, replicas):
        rep = self.pinned
        if rep is not None and rep.state == "ready" and rep.gone_s is None:
            return rep
        return self.inner.choose(replicas)


class ResultCache(Architecture):
    """The ``cache`` section: a front for arrivals (lookups) and a listener for finished batches (stores)."""

    def __init__(self, scenario, arrivals: np.ndarray, rng: np.random.Generator) -> None:
        self.spec = spec = scenario.cache
        self.scenario = scenario
        self.keys = request_keys(scenario, arrivals.size, rng).tolist()
        self.hit = np.zeros(arrivals.size, dtype=bool)
        self._new = lambda: POLICIES[spec.policy](spec.capacity_entries, spec.ttl_s)
        self.shared = self._new() if spec.scope == "shared" else None
        self._per_replica: dict[int, object] = {}
        self.router: PinnedRouter | None = None

    def wrap_router(self, router):
        if self.shared is None:
            self.router = PinnedRouter(router)
            return self.router
        return router

    def attach(self, engine, scaler) -> None:
        self.engine, self.env = engine, engine.env
        engine.attach_front(self)
        engine.on_batch_done(self._store)

    def _cache_of(self, rep):
        if self.shared is not None:
            return self.shared
        cache = self._per_replica.get(rep.index)
        if cache is None:
            cache = self._per_replica[rep.index] = self._new()
        return cache

    def arrive(self, i: int) -> None:
        rep = None
        if self.shared is None:
            ready = self.engine.ready_replicas()
            if not ready:  # no replica, no cache to look in: the activator holds it (a miss)
                self.engine.admit(i)
                return
            rep = self.router.inner.choose(ready)
        now, lookup = self.env.now, self.spec.lookup_s
        if self._cache_of(rep).get(self.keys[i], now):
            self.hit[i] = True
            self.engine.answer_without_model(i, now + lookup, rep)
        elif lookup:
            self.env.timeout(lookup, (i, rep)).callbacks.append(lambda event: self._to_model(*event.value))
        else:
            self._to_model(i, rep)

    def _to_model(self, i: int, rep) -> None:
        if self.router is not None:
            self.router.pinned = rep
        self.engine.admit(i)
        if self.router is not None:
            self.router.pinned = None

    def _store(self, rep, batch: list[int], now: float) -> None:
        cache, keys = self._cache_of(rep), self.keys
        for i in batch:
            cache.put(keys[i], now)

    def finish(self, raw) -> None:
        raw.extra.setdefault("request_columns", {})["cache_hit"] = self.hit

    def extend(self, summary, requests, batches, timeseries, replicas, window) -> None:
        arrival = requests["arrival_s"].to_numpy()
        hit = requests["cache_hit"].to_numpy()
        inside = (arrival >= window[0]) & (arrival < window[1])
        summary["cache_lookups"] = int(inside.sum())
        summary["cache_hits"] = int(hit[inside].sum())
        summary["cache_hit_ratio"] = float(hit[inside].mean()) if inside.any() else math.nan
        summary["cache_hit_ratio_theory"] = self.theory()
        timeseries["cache_hit_ratio"] = hit_ratio_series(timeseries["time_s"].to_numpy(), arrival, hit)

    def theory(self) -> float:
        """Che's approximation (LRU) or the TTL closed form (a shared cache, Poisson arrivals) for Zipf keys;
        NaN where neither applies."""
        spec, arrivals = self.spec, self.scenario.workload.arrivals
        if spec.keys.source != "zipf":
            return math.nan
        popularity = zipf_popularity(spec.keys.distinct_keys, spec.keys.exponent)
        if spec.policy == "lru":
            return lru_hit_ratio(popularity, spec.capacity_entries)
        if spec.policy == "ttl" and spec.scope == "shared" and arrivals.process == "poisson" \
                and spec.capacity_entries >= spec.keys.distinct_keys:
            return ttl_hit_ratio(popularity, mean_rate_rps(arrivals), spec.ttl_s)
        return math.nan


def hit_ratio_series(time_s: np.ndarray, arrival_s: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Hits / lookups among the requests arriving in each sample's interval (NaN where none arrived)."""
    looked = np.searchsorted(arrival_s, time_s, side="right")
    hits = np.concatenate([[0], np.cumsum(hit)])[looked]
    lookups, hit_count = np.diff(looked, prepend=0), np.diff(hits, prepend=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(lookups > 0, hit_count / np.maximum(lookups, 1), np.nan)
