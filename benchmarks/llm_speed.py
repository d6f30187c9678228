"""How fast capsim simulates token-level LLM serving: simulated requests and tokens per wall second.

An llm scenario of 8 replicas (Llama-3-8B, one H100 each, roofline iteration times), chat-like token
lengths (lognormal prompts of mean 600, outputs of mean 250, cv 1), Poisson arrivals at 70% of the
fleet's estimated capacity (``sim.llm.capacity``), 10,000 requests. The target is ≥ 2,000 simulated
requests/s and ≥ 500,000 simulated tokens/s (prompt + output) on one core.

Then the same request count with outputs 4× and 16× longer, at the same 70% load: the engine works per
iteration and per event (admission, a new KV block every ``block_size`` tokens, completion), not per
token of every sequence, so wall time grows with the number of iterations and blocks, far slower
than the number of tokens.

Last, the ×1 traffic on the same 8 replicas split into 4 prefill + 4 decode (``llm.disaggregation``):
every request is handed over and its KV copied, one more event each.

Only ``sim.run`` is timed (the scenario is built before), the fastest of ``--repeat`` runs, after one
small warm-up run.

    .venv/bin/python benchmarks/llm_speed.py [--requests 10000] [--repeat 3]
    .venv/bin/python benchmarks/llm_speed.py --profile   # cProfile of one run, top functions by own time
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

import sim
from sim.llm.build import llm_setup
from sim.llm.capacity import replica_capacity_rps
from sim.scenario.keys import updated
from sim.workload.tokens import token_counts

TARGET_RPS, TARGET_TOKENS = 2_000, 500_000
REPLICAS, LOAD = 8, 0.7


def chat_scenario(requests: int, output_scale: float = 1.0, rate_rps: float = 100.0):
    return sim.scenario_from_dict({
        "name": f"llm-speed-x{output_scale:g}",
        "workload": {
            "arrivals": {"process": "poisson", "rate_rps": rate_rps},
            "input_tokens": {"distribution": "lognormal", "mean_tokens": 600, "cv": 1.0, "max_tokens": 4096},
            "output_tokens": {"distribution": "lognormal", "mean_tokens": 250 * output_scale, "cv": 1.0,
                              "max_tokens": 4000},
        },
        "llm": {"model": "llama-3-8b", "max_model_len": 8192},
        "fleet": {"replicas": REPLICAS, "gpu": "H100-SXM", "router": "least_outstanding"},
        "run": {"requests": requests, "seed": 1},
    })


def at_load(scenario, load: float = LOAD):
    """``scenario`` with its Poisson rate set to ``load`` × the fleet's estimated capacity."""
    setup = llm_setup(scenario)
    inp, out = token_counts(scenario, np.random.default_rng(0), 20_000, setup.max_model_len)
    llm = scenario.llm
    per_replica = replica_capacity_rps(setup.step_time, kv_tokens=setup.plan.kv_tokens,
                                       block_size=llm.block_size, max_num_seqs=llm.max_num_seqs,
                                       max_num_batched_tokens=llm.max_num_batched_tokens,
                                       mean_input_tokens=float(inp.mean()), mean_output_tokens=float(out.mean()))
    return updated(scenario, {"workload.arrivals.rate_rps": round(load * per_replica * REPLICAS, 3)})


def timed(scenario, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = sim.run(scenario)
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    sim.run(chat_scenario(200))  # warm imports and caches
    if args.profile:
        scenario = at_load(chat_scenario(args.requests))
        cProfile.runctx("sim.run(scenario)", globals(), {"scenario": scenario, "sim": sim}, "/tmp/llm_speed.prof")
        pstats.Stats("/tmp/llm_speed.prof").sort_stats("tottime").print_stats(15)
        return
    print(f"{'outputs':>8} {'rate req/s':>10} {'requests':>9} {'tokens':>11} {'iterations':>10} {'wall s':>7} "
          f"{'req/wall-s':>10} {'tok/wall-s':>11} {'µs/iter':>8} {'util':>5} {'TPOT p50':>9}")
    for scale in (1, 4, 16):
        scenario = at_load(chat_scenario(args.requests, scale))
        wall, result = timed(scenario, args.repeat if scale == 1 else 1)
        req = result.requests
        tokens = int(req["input_tokens"].sum() + req["output_tokens"].sum())
        iterations = len(result.batches)
        s = result.summary
        print(f"{'×' + str(scale):>8} {scenario.workload.arrivals.rate_rps:>10.1f} {len(req):>9,} {tokens:>11,} "
              f"{iterations:>10,} {wall:>7.2f} {len(req) / wall:>10,.0f} {tokens / wall:>11,.0f} "
              f"{wall / iterations * 1e6:>8.1f} {s['kv_utilization_mean']:>5.2f} {s['tpot_p50_s'] * 1e3:>7.2f}ms")
        if scale == 1:
            ok = len(req) / wall >= TARGET_RPS and tokens / wall >= TARGET_TOKENS
            print(f"{'':>8} target ≥ {TARGET_RPS:,} req/s and ≥ {TARGET_TOKENS:,} tok/s: {'met' if ok else 'MISSED'}")
            mixed_rate = scenario.workload.arrivals.rate_rps
    split = updated(chat_scenario(args.requests), {
        "workload.arrivals.rate_rps": mixed_rate / 2,  # 2 + 2 carries less than 4 mixed (docs/llm.md)
        "llm.disaggregation": {"prefill_replicas": REPLICAS // 2, "decode_replicas": REPLICAS // 2}})
    wall, result = timed(split, args.repeat)
    req = result.requests
    tokens = int(req["input_tokens"].sum() + req["output_tokens"].sum())
    s = result.summary
    print(f"{'×1 P/D':>8} {split.workload.arrivals.rate_rps:>10.1f} {len(req):>9,} {tokens:>11,} "
          f"{len(result.batches):>10,} {wall:>7.2f} {len(req) / wall:>10,.0f} {tokens / wall:>11,.0f} "
          f"{wall / len(result.batches) * 1e6:>8.1f} {s['kv_utilization_mean']:>5.2f} {s['tpot_p50_s'] * 1e3:>7.2f}ms")


if __name__ == "__main__":
    main()
