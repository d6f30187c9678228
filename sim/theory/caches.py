"""Hit ratios of result caches in closed form, which the simulated caches are checked against.

Keys are requested independently (the independent reference model, IRM): key k with probability p_k.

* Zipf popularity over K keys: p_k = k^-s / Σ_j j^-s, k = 1..K (s = 0: uniform).
* LRU, Che's approximation (Che, Tung and Wang 2002; Fricker, Robert and Roberts 2012): a key stays in a
  cache of C entries for a characteristic time T_C (in requests) after its last request, where T_C solves
  Σ_k (1 − e^{−p_k T_C}) = C; key k hits with probability 1 − e^{−p_k T_C}, and the hit ratio is
  Σ_k p_k (1 − e^{−p_k T_C}). Accurate to a fraction of a percent for K and C in the hundreds and above.
* TTL, an entry expiring T seconds after it was stored (a hit does not extend it), keys arriving as
  Poisson processes of rates λ_k: each miss stores the key, which then hits Poisson(λ_k T) times on
  average before it expires, so h_k = λ_k T / (1 + λ_k T), and the hit ratio is Σ_k p_k h_k (with capacity
  for every key: no evictions).
* A perfect LFU cache holds the C most popular keys: hit ratio Σ_{k ≤ C} p_k, an upper bound for any
  policy under IRM (an in-cache LFU, which forgets counts on eviction, gets less).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq


def zipf_popularity(distinct_keys: int, exponent: float) -> np.ndarray:
    """p_k ∝ k^-s over k = 1..K, most popular first (sums to 1)."""
    if distinct_keys < 1 or exponent < 0:
        raise ValueError(f"distinct_keys = {distinct_keys}, exponent = {exponent}: need K ≥ 1 and s ≥ 0")
    weights = np.arange(1, distinct_keys + 1, dtype=float) ** -float(exponent)
    return weights / weights.sum()


def che_characteristic_time(popularity: np.ndarray, capacity: int) -> float:
    """T_C (in requests) with Σ_k (1 − e^{−p_k T_C}) = C; infinite when every key fits."""
    p = np.asarray(popularity, dtype=float)
    if capacity >= np.count_nonzero(p):
        return math.inf
    occupancy = lambda t: float(-np.expm1(-p * t).sum()) - capacity  # noqa: E731 - increasing in t
    hi = capacity / p.max()
    while occupancy(hi) < 0:
        hi *= 2
    return float(brentq(occupancy, 0.0, hi, xtol=1e-12 * hi, rtol=1e-12))


def lru_hit_ratio(popularity: np.ndarray, capacity: int) -> float:
    """Che's approximation of an LRU cache's hit ratio under IRM."""
    p = np.asarray(popularity, dtype=float)
    t = che_characteristic_time(p, capacity)
    return 1.0 if math.isinf(t) else float((p * -np.expm1(-p * t)).sum())


def ttl_hit_ratio(popularity: np.ndarray, rate_rps: float, ttl_s: float) -> float:
    """Hit ratio of a TTL cache (expiry ``ttl_s`` after storing) under Poisson keys of total rate ``rate_rps``."""
    p = np.asarray(popularity, dtype=float)
    x = p * rate_rps * ttl_s
    return float((p * x / (1.0 + x)).sum())


def perfect_lfu_hit_ratio(popularity: np.ndarray, capacity: int) -> float:
    """The C most popular keys' share of requests: the best any cache of C entries does under IRM."""
    p = np.sort(np.asarray(popularity, dtype=float))[::-1]
    return float(p[:capacity].sum())
