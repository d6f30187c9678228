"""Routers of token-level serving: ``prefix_affinity`` (a shared prefix's requests to the replica it hashes
to, with bounded load) and ``least_kv_cache`` (the replica with the least KV cache in use), each against
the plain routers on the same traffic, and the hashing's and the load bound's properties on their own."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim


# ---------------------------------------------------------------- routing by prefix
class _Replica:
    def __init__(self, index: int, outstanding: int = 0) -> None:
        self.index, self.outstanding = index, outstanding


def test_prefix_affinity_moves_only_the_prefixes_of_a_replica_that_leaves():
    from sim.serving.routers import PrefixAffinity

    router = PrefixAffinity(np.random.default_rng(0))
    fleet = [_Replica(k) for k in range(8)]
    before = {g: router.choose(fleet, g).index for g in range(2000)}
    assert set(before.values()) == set(range(8))  # every replica owns some prefixes
    assert max(np.bincount(list(before.values()))) < 2000 / 8 * 1.3  # and about an eighth of them
    after = {g: router.choose([r for r in fleet if r.index != 3], g).index for g in range(2000)}
    moved = {g for g in before if before[g] != after[g]}
    assert moved == {g for g, k in before.items() if k == 3}


def test_prefix_affinity_bounds_the_load_of_a_hot_prefix():
    """Every request of one prefix, none finishing: the prefix's replica takes them until it holds 1.25 ×
    the mean (the new request counted), then the next in its order, and so on."""
    from sim.serving.routers import PrefixAffinity

    router = PrefixAffinity(np.random.default_rng(0))
    fleet = [_Replica(k) for k in range(4)]
    for m in range(1, 201):
        router.choose(fleet, 7).outstanding += 1
        assert max(r.outstanding for r in fleet) <= math.ceil(1.25 * m / 4)
    assert sum(r.outstanding for r in fleet) == 200 and min(r.outstanding for r in fleet) > 0


def fleet_run(router: str, blocks: int):
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": 40},
                     "input_tokens": {"distribution": "fixed", "tokens": 50},
                     "output_tokens": {"distribution": "fixed", "tokens": 20},
                     "shared_prefix": {"tokens": 512, "groups": 8}},
        "llm": {"model": "llama-2-7b", "num_gpu_blocks_override": blocks, "max_model_len": 1024},
        "fleet": {"gpu": "H100-SXM", "replicas": 4, "router": router},
        "run": {"duration_s": 200, "warmup_s": 20}})
    return sim.run(sc, seed=0).summary


def test_routing_by_prefix_keeps_each_replica_s_cache_on_its_own_prefixes():
    """8 prefixes of 32 blocks over 4 replicas of 200 blocks (about 5 prefixes each): spread round robin,
    every replica sees all 8 and evicts; routed by prefix, each sees about 2 and keeps them. With room for
    all 8 everywhere the routers tie (every prompt after a replica's first of each prefix hits)."""
    tight = {router: fleet_run(router, 200)["prefix_cache_hit_rate"] for router in ("round_robin",
                                                                                  "prefix_affinity")}
    print(tight)
    assert tight["prefix_affinity"] > tight["round_robin"] + 0.2
    roomy = {router: fleet_run(router, 1000)["prefix_cache_hit_rate"] for router in ("round_robin",
                                                                                   "prefix_affinity")}
    assert roomy["prefix_affinity"] == pytest.approx(roomy["round_robin"], abs=0.005)
    assert roomy["round_robin"] == pytest.approx(512 / 562, abs=0.01)  # the prefix's share of a prompt


# ---------------------------------------------------------------- routing by KV-cache use
def kv_run(router: str) -> dict:
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": 14},
                     "input_tokens": {"distribution": "lognormal", "mean_tokens": 600, "cv": 1.5, "max_tokens": 3500},
                     "output_tokens": {"distribution": "lognormal", "mean_tokens": 300, "cv": 1.5, "max_tokens": 500}},
        "llm": {"model": "llama-2-7b", "num_gpu_blocks_override": 600, "max_model_len": 4096},
        "fleet": {"gpu": "H100-SXM", "replicas": 4, "router": router},
        "run": {"duration_s": 300, "warmup_s": 20}})
    return sim.run(sc, seed=0).summary


def test_routing_by_kv_cache_use_preempts_less():
    """Long-tailed prompts on 4 replicas with small KV caches: sending each request to the replica with
    the least KV in use keeps long sequences apart, so far fewer sequences are preempted than round robin
    (which ignores load) or least outstanding (which counts requests, not their tokens)."""
    preempted = {router: kv_run(router)["preemptions"] for router in ("round_robin", "least_outstanding",
                                                                       "least_kv_cache")}
    print(preempted)
    assert preempted["least_kv_cache"] < preempted["least_outstanding"] < preempted["round_robin"]
    assert preempted["least_kv_cache"] <= 0.5 * preempted["least_outstanding"]


def test_routing_by_kv_cache_use_falls_back_to_least_outstanding_for_request_level_replicas():
    doc = {"workload": {"arrivals": {"process": "poisson", "rate_rps": 300}},
           "service": {"type": "parametric", "base_s": 0.004, "distribution": "exponential"},
           "fleet": {"replicas": 3, "router": "least_kv_cache"}, "run": {"duration_s": 20}}
    kv = sim.run(sim.scenario_from_dict(doc), seed=2).requests
    doc["fleet"]["router"] = "least_outstanding"
    least = sim.run(sim.scenario_from_dict(doc), seed=2).requests
    assert kv["replica"].tolist() == least["replica"].tolist()
