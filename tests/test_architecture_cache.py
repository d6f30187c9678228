"""Result caching: the policies worked by hand, a hit's and a miss's times by hand, and the simulated hit
ratio against Che's approximation (LRU) and the TTL closed form (sim/theory/caches.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.architectures.cache import LfuCache, LruCache, TtlCache
from sim.theory.caches import lru_hit_ratio, ttl_hit_ratio, zipf_popularity

FAST = {"service": {"type": "parametric", "base_s": 0.0005}, "fleet": {"replicas": 4}}


def test_lru_evicts_the_least_recently_used():
    cache = LruCache(2)
    cache.put("a", 0)
    cache.put("b", 0)
    assert cache.get("a", 0)  # a is now more recent than b
    cache.put("c", 0)  # evicts b
    assert [cache.get(k, 0) for k in "abc"] == [True, False, True]


def test_lfu_evicts_the_least_frequently_used_then_the_least_recent():
    cache = LfuCache(2)
    cache.put("a", 0)
    cache.put("b", 0)
    assert cache.get("a", 0) and cache.get("a", 0) and cache.get("b", 0)  # a: 3, b: 2
    cache.put("c", 0)  # evicts b (count 2 < 3)
    assert not cache.get("b", 0) and cache.get("c", 0)  # c: 2
    cache.put("d", 0)  # a: 3, c: 2 -> evicts c
    assert [cache.get(k, 0) for k in "acd"] == [True, False, True]


def test_ttl_entries_expire_after_their_lifetime_and_the_oldest_goes_when_full():
    cache = TtlCache(2, ttl_s=1.0)
    cache.put("a", 0.0)
    cache.put("b", 0.5)
    assert cache.get("a", 0.99) and not cache.get("a", 1.0)  # stored at 0, expires at 1
    cache.put("c", 1.2)
    cache.put("d", 1.3)  # full: b (the oldest) goes
    assert [cache.get(k, 1.4) for k in "bcd"] == [False, True, True]


def test_a_hit_costs_the_lookup_and_a_miss_the_lookup_then_the_model(tmp_path):
    """Keys a, a, b, a at 0, 10, 20, 30 ms; lookup 1 ms, service 4 ms, one replica. r0 misses (queued at
    1 ms, served 1-5 ms, stored at 5 ms), r1 hits (ends at 11 ms), r2 misses (21-25 ms), r3 hits (31 ms)."""
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,user\n0.0,a\n0.01,a\n0.02,b\n0.03,a\n")
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(trace)}},
        "service": {"type": "parametric", "base_s": 0.004},
        "cache": {"capacity_entries": 10, "lookup_s": 0.001, "keys": {"source": "trace", "column": "user"}},
        "run": {"duration_s": 1.0}})
    r = sim.run(sc).requests
    assert r["cache_hit"].tolist() == [False, True, False, True]
    np.testing.assert_allclose(r["end_s"], [0.005, 0.011, 0.025, 0.031], atol=1e-12)
    np.testing.assert_allclose(r["start_s"], [0.001, math.nan, 0.021, math.nan], atol=1e-12)
    assert r["outcome"].tolist() == ["served"] * 4 and r["batch_size"].tolist() == [1, 0, 1, 0]


def _hit_ratio(cache: dict, rate_rps: float, seed: int = 11) -> dict:
    sc = sim.scenario_from_dict({**FAST, "workload": {"arrivals": {"process": "poisson", "rate_rps": rate_rps}},
                                 "cache": {"lookup_s": 0.0001, **cache},
                                 "run": {"duration_s": 30, "warmup_s": 5, "seed": seed}})
    return sim.run(sc).summary


@pytest.mark.parametrize(("exponent", "capacity"), [(0.8, 50), (1.0, 100), (1.2, 200)])
def test_lru_hit_ratio_matches_che_approximation(exponent, capacity):
    """Zipf keys over K = 1000, about 50,000 measured lookups: within 2 percentage points of Che."""
    s = _hit_ratio({"capacity_entries": capacity, "keys": {"distinct_keys": 1000, "exponent": exponent}}, 2000)
    che = lru_hit_ratio(zipf_popularity(1000, exponent), capacity)
    assert s["cache_hit_ratio"] == pytest.approx(che, abs=0.02)
    assert s["cache_hit_ratio_theory"] == pytest.approx(che)


def test_per_replica_lru_caches_see_the_same_popularity():
    """Round robin thins the key stream without changing its popularity: Che holds per replica."""
    s = _hit_ratio({"capacity_entries": 100, "scope": "per_replica", "keys": {"distinct_keys": 1000}}, 2000)
    assert s["cache_hit_ratio"] == pytest.approx(lru_hit_ratio(zipf_popularity(1000, 1.0), 100), abs=0.02)


@pytest.mark.parametrize("ttl_s", [0.2, 1.0])
def test_ttl_hit_ratio_matches_its_closed_form_under_poisson_keys(ttl_s):
    """h_k = λ_k T / (1 + λ_k T) with λ_k = p_k λ, capacity for every key."""
    s = _hit_ratio({"policy": "ttl", "ttl_s": ttl_s, "capacity_entries": 1000,
                    "keys": {"distinct_keys": 1000, "exponent": 0.8}}, 1000)
    assert s["cache_hit_ratio"] == pytest.approx(ttl_hit_ratio(zipf_popularity(1000, 0.8), 1000, ttl_s), abs=0.02)


def test_hit_ratio_is_reported_over_time():
    sc = sim.scenario_from_dict({**FAST, "workload": {"arrivals": {"process": "poisson", "rate_rps": 500}},
                                 "cache": {"capacity_entries": 2000, "keys": {"distinct_keys": 10000}},
                                 "run": {"duration_s": 20, "sample_interval_s": 1.0}})
    result = sim.run(sc)
    series = result.timeseries["cache_hit_ratio"].to_numpy()[1:21]  # the interval (t - 1 s, t] for t = 1..20
    assert series[0] < series[4] < series[-1]  # the cache fills up from empty
    assert np.mean(series) == pytest.approx(result.requests["cache_hit"].mean(), abs=0.01)


@pytest.mark.parametrize(("cache", "message"), [
    ({"policy": "ttl", "capacity_entries": 10, "keys": {"distinct_keys": 5}}, "cache: policy ttl needs ttl_s"),
    ({"capacity_entries": 0, "keys": {"distinct_keys": 5}}, "cache.capacity_entries = 0"),
    ({"capacity_entries": 10, "keys": {"source": "zipf"}}, "cache.keys: source zipf needs distinct_keys"),
    ({"capacity_entries": 10, "keys": {"source": "trace"}}, "cache.keys.source = 'trace': the keys are a column"),
    ({"capacity_entries": 10, "keys": {"distinct_keys": 5}, "lookup_s": -1}, "cache.lookup_s = -1"),
])
def test_bad_cache_values_are_one_line_errors(cache, message):
    with pytest.raises(sim.ScenarioError, match=message) as info:
        sim.scenario_from_dict({**FAST, "workload": {"arrivals": {"process": "poisson", "rate_rps": 5}},
                                "cache": cache, "run": {"duration_s": 1}})
    assert "\n" not in str(info.value)
