"""Prefix caching (``llm.enable_prefix_caching`` with ``workload.shared_prefix``): an exact trace worked by
hand, the LRU hit ratio against its closed forms (uniform: capacity / prefixes; Zipf: Che's approximation),
the block accounting under preemption pressure, and the scenario's one-line refusals.

The scheduler's rules (sim/llm/scheduler.py, rule 4): the full blocks of a shared prefix that a sequence
computed are cached once its prefill passes them; a later sequence with that prefix starts its prefill
after them and holds only its own blocks; a cached prefix no running sequence holds stays among the free
blocks, evicted least recently used first when a block is needed and none is empty.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_llm_exact_traces import assert_rows, iteration_table, ms

import sim
from sim.architectures.cache import lru_hit_ratio, zipf_popularity
from sim.errors import CapsimError
from sim.llm.scheduler import Scheduler, Sequences

STEP_MS = 10.0


def simulate(tmp_path, rows, caching=True, **prefix):
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,input_tokens,output_tokens\n" + "".join(f"{a / 1000!r},{i},{o}\n" for a, i, o in rows))
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(path)},
                     "input_tokens": {"distribution": "trace"}, "output_tokens": {"distribution": "trace"},
                     "shared_prefix": {"tokens": 16, **prefix}},
        "llm": {"model": "llama-2-7b", "block_size": 8, "enable_prefix_caching": caching,
                "step_time": {"type": "coefficients", "base_s": STEP_MS / 1000}},
        "fleet": {"gpu": "H100-SXM"},
        "run": {"duration_s": rows[-1][0] / 1000 + 1.0},
    })
    return sim.run(sc, seed=0)


# ---------------------------------------------------------------- an exact trace
# Block size 8; every request starts with the same 16-token prefix (2 full blocks) before its own 4 tokens
# (20 in all: 3 blocks) and generates 2 tokens. A at 0 ms computes all 20 and caches the prefix; B at
# 100 ms finds it and computes its 4; C and D at 200 ms both find it (C starts an iteration at once, D
# joins the next while C decodes) and share its 2 blocks: 4 blocks in use, not 6. Rows: (start_ms,
# sequences, prefill_tokens, decode_tokens, kv_blocks_used, preempted).
ROWS = [(0, 4, 2), (100, 4, 2), (200, 4, 2), (200, 4, 2)]


def test_a_cached_prefix_is_computed_once_and_shared(tmp_path):
    result = simulate(tmp_path, ROWS)
    assert_rows(iteration_table(result), [
        (0.0, 1, 20, 0, 3, 0), (10.0, 1, 0, 1, 3, 0),      # A: misses, computes 20, caches 2 blocks
        (100.0, 1, 4, 0, 3, 0), (110.0, 1, 0, 1, 3, 0),    # B: 16 from the cache, computes 4
        (200.0, 1, 4, 0, 3, 0), (210.0, 2, 4, 1, 4, 0),    # C, then D: the prefix's 2 blocks + 1 each
        (220.0, 1, 0, 1, 3, 0),
    ])
    r = result.requests
    assert r["input_tokens"].tolist() == [20] * 4 and r["prefix_group"].tolist() == [0] * 4
    assert r["cached_tokens"].tolist() == [0, 16, 16, 16]
    assert [ms(x) for x in r["first_token_s"]] == [10.0, 110.0, 210.0, 220.0]
    assert result.summary["prefix_cache_hit_rate"] == pytest.approx(48 / 80)


def test_without_caching_every_prompt_is_computed(tmp_path):
    result = simulate(tmp_path, ROWS, caching=False)
    assert_rows(iteration_table(result), [
        (0.0, 1, 20, 0, 3, 0), (10.0, 1, 0, 1, 3, 0),
        (100.0, 1, 20, 0, 3, 0), (110.0, 1, 0, 1, 3, 0),
        (200.0, 1, 20, 0, 3, 0), (210.0, 2, 20, 1, 6, 0), (220.0, 1, 0, 1, 3, 0),
    ])
    assert result.requests["cached_tokens"].tolist() == [0] * 4
    assert result.summary["prefix_cache_hit_rate"] == 0.0


def test_requests_without_a_prefix_are_their_own(tmp_path):
    result = simulate(tmp_path, ROWS, share=0.0)
    assert result.requests["input_tokens"].tolist() == [4] * 4
    assert result.requests["prefix_group"].tolist() == [-1] * 4
    assert result.summary["prefix_cache_hit_rate"] == 0.0


# ---------------------------------------------------------------- the scheduler alone
def serve_one_at_a_time(groups: np.ndarray, *, prefix_blocks: int, capacity: int, block_size: int = 8) -> list[int]:
    """Serve requests one after another (each done before the next comes) on a pool that holds exactly
    ``capacity`` cached prefixes besides one request's own block: per request, its cached tokens."""
    own, prefix = 4, prefix_blocks * block_size
    n = groups.size
    seqs = Sequences([prefix + own] * n, [1] * n, prefix_group=groups.tolist(), prefix_tokens=prefix)
    sched = Scheduler(seqs, max_num_seqs=4, max_num_batched_tokens=512, block_size=block_size,
                      kv_blocks=capacity * prefix_blocks + 1)
    now = 0.0
    for i in range(n):
        sched.add(i)
        while sched.has_work():
            it = sched.schedule(now)
            now += 1.0
            sched.complete(it, now)
            check_accounting(sched)
    return seqs.cached_tokens


def check_accounting(sched: Scheduler) -> None:
    """Free + used = the pool; each cached entry is held by the running sequences that say so; the
    evictable ones by none, and their blocks are among the free."""
    seqs = sched.seqs
    held = {}
    for i in sched.running:
        for key in seqs.held[i]:
            held[key] = held.get(key, 0) + 1
    assert {k: n for k, n in sched.refs.items() if n} == held
    assert set(sched.evictable) == {k for k, n in sched.refs.items() if n == 0}
    assert sched.evictable_blocks == sum(sched.size[k] for k in sched.evictable)
    in_use = sum(seqs.blocks[i] for i in sched.running) + sum(sched.size[k] for k in held)
    assert sched.used_blocks == in_use
    assert sched.free_blocks >= sched.evictable_blocks  # the empty ones are never negative
    assert sched.used_blocks + sched.free_blocks == sched.total_blocks


def test_an_exact_lru_eviction_order():
    # capacity 2 prefixes: A B A C B -> miss miss hit miss(evicts B, the least recent) miss(evicts A)
    cached = serve_one_at_a_time(np.array([0, 1, 0, 2, 1]), prefix_blocks=2, capacity=2)
    assert cached == [0, 0, 16, 0, 0]
    cached = serve_one_at_a_time(np.array([0, 1, 0, 2, 0]), prefix_blocks=2, capacity=2)
    assert cached == [0, 0, 16, 0, 16]  # C evicted B, so A is still there


@pytest.mark.parametrize("groups, capacity, zipf_s", [(10, 4, 0.0), (50, 10, 0.8), (200, 20, 1.1)])
def test_the_hit_ratio_agrees_with_lru_theory(groups, capacity, zipf_s):
    """Independent requests over ``groups`` prefixes of Zipf popularity through a cache of ``capacity``
    prefixes: the share of requests that hit is the LRU hit ratio (uniform: exactly capacity / groups;
    Zipf: Che's approximation), within 0.02 over 20,000 requests."""
    rng = np.random.default_rng(7)
    popularity = zipf_popularity(groups, zipf_s) if zipf_s else np.full(groups, 1 / groups)
    requests = rng.choice(groups, size=20_000, p=popularity)
    cached = np.asarray(serve_one_at_a_time(requests, prefix_blocks=2, capacity=capacity))
    hits = float((cached[2_000:] > 0).mean())
    theory = capacity / groups if not zipf_s else lru_hit_ratio(popularity, capacity)
    print(f"\n{groups} prefixes, capacity {capacity}, Zipf {zipf_s}: hit ratio {hits:.4f}, theory {theory:.4f}")
    assert hits == pytest.approx(theory, abs=0.02)


def test_blocks_add_up_under_preemption_pressure():
    """Many sequences with a few prefixes, half of them turns of a few conversations (in no order: the
    cache must stay consistent whatever it is given), on a pool too small for them all: preemptions happen,
    the accounting holds after every iteration, every sequence finishes, and the cache is all free at the
    end."""
    rng = np.random.default_rng(3)
    n = 300
    groups = np.where(rng.random(n) < 0.8, rng.integers(0, 5, n), -1)
    prefix = 24
    inputs = rng.integers(1, 40, n) + np.where(groups >= 0, prefix, 0)
    outputs = rng.integers(1, 60, n)
    conversations = np.where(rng.random(n) < 0.5, rng.integers(0, 20, n), -1)  # turns of 20 conversations
    seqs = Sequences(inputs.tolist(), outputs.tolist(), prefix_group=groups.tolist(), prefix_tokens=prefix,
                     conversation=conversations.tolist())
    sched = Scheduler(seqs, max_num_seqs=32, max_num_batched_tokens=128, block_size=8, kv_blocks=60)
    now, arrivals, next_arrival = 0.0, np.sort(rng.uniform(0, 30, n)), 0
    while next_arrival < n or sched.has_work():
        while next_arrival < n and arrivals[next_arrival] <= now:
            sched.add(next_arrival)
            next_arrival += 1
        it = sched.schedule(now)
        now += 0.05
        if it is not None:
            sched.complete(it, now)
            check_accounting(sched)
    assert all(e == e for e in seqs.end_s), "a sequence did not finish"
    assert sum(seqs.preemptions) > 0, "no preemption: the pool was not small enough to test under pressure"
    assert sum(seqs.cached_tokens) > 0 and any(k[0] == "conversation" for k in sched.size)
    assert sched.used_blocks == 0 and sched.free_blocks == sched.total_blocks


# ---------------------------------------------------------------- the scenario
def base_scenario(**workload):
    return {"workload": {"arrivals": {"process": "poisson", "rate_rps": 2},
                         "input_tokens": {"distribution": "fixed", "tokens": 100},
                         "output_tokens": {"distribution": "fixed", "tokens": 10}, **workload},
            "llm": {"model": "llama-2-7b"}, "fleet": {"gpu": "H100-SXM"}, "run": {"duration_s": 5}}


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("llm") and d.update(service={"type": "parametric", "base_s": 0.01}) or d,
     "workload.shared_prefix: shared prompt prefixes need an llm section"),
    (lambda d: d["workload"]["shared_prefix"].update(tokens=4096) or d, "workload.shared_prefix.tokens"),
    (lambda d: d["workload"]["shared_prefix"].update(tokens=4000) or d, "workload.input_tokens.tokens"),
    (lambda d: d["workload"]["shared_prefix"].update(share=1.5) or d, "share"),
    (lambda d: d["workload"]["shared_prefix"].update(groups=0) or d, "groups"),
])
def test_bad_shared_prefixes_are_one_line_errors(change, message):
    doc = change(base_scenario(shared_prefix={"tokens": 512, "groups": 3}))
    doc["workload"].pop("input_tokens", None) if "llm" not in doc else None
    doc["workload"].pop("output_tokens", None) if "llm" not in doc else None
    with pytest.raises(CapsimError) as err:
        sim.scenario_from_dict(doc)
    text = str(err.value)
    assert message in text and "\n" not in text.strip(), text


def test_prefix_groups_follow_their_popularity():
    sc = sim.scenario_from_dict(base_scenario(shared_prefix={"tokens": 32, "groups": 4, "share": 0.75,
                                                             "zipf_s": 1.0}))
    sc = sc.model_copy(update={"run": sc.run.model_copy(update={"duration_s": 2000.0})})
    result = sim.run(sc, seed=1)
    g = result.requests["prefix_group"].to_numpy()
    assert (g >= 0).mean() == pytest.approx(0.75, abs=0.02)
    weights = 1 / np.arange(1, 5)
    share = np.bincount(g[g >= 0], minlength=4) / (g >= 0).sum()
    np.testing.assert_allclose(share, weights / weights.sum(), atol=0.02)
    assert (result.requests["input_tokens"].to_numpy() == np.where(g >= 0, 132, 100)).all()


def test_compare_shows_what_the_cache_saves(capsys):
    """The shipped example against itself with caching off, side by side in `capsim compare`'s LLM rows:
    same traffic, far fewer prompt tokens computed and a shorter TTFT with the cache."""
    from sim.cli import main

    assert main(["compare", "llm/chat_system_prompt", "--vary", "no cache:llm.enable_prefix_caching=false"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in out.splitlines() if line.count("│") >= 4}
    hits, none = rows["prompt tokens from the prefix cache"]
    assert float(hits.rstrip(" %")) > 50 and none == "0.0 %"
    with_cache, without = (float(v.split()[0].replace(",", "")) for v in rows["TTFT p50"])
    assert with_cache < 0.5 * without


def test_the_capacity_ceiling_counts_cached_prefixes_as_not_computed():
    from sim.llm.build import llm_setup
    from sim.llm.capacity import cached_prompt_tokens
    from sim.planner.llm import llm_replica_capacity_rps

    doc = base_scenario(shared_prefix={"tokens": 1000, "groups": 2, "share": 0.5})
    cached = sim.scenario_from_dict(doc)
    doc["llm"]["enable_prefix_caching"] = False
    plain = sim.scenario_from_dict(doc)
    assert cached_prompt_tokens(cached) == 0.5 * 992 and cached_prompt_tokens(plain) == 0.0  # full blocks of 16
    assert llm_replica_capacity_rps(cached) > 1.2 * llm_replica_capacity_rps(plain)
    assert llm_setup(cached).plan.kv_blocks == llm_setup(plain).plan.kv_blocks
