"""Disaggregated prefill and decode (``llm.disaggregation``): an exact trace worked by hand, the closed form
of TTFT and TPOT for requests that meet no one, the accounting of every token and block under pressure,
and the scenario's rules.

The rules (sim/llm/scheduler.py rule 5, sim/llm/engine.py): prefill replicas take the arrivals and only
prefill; a computed prompt is handed to a decode replica, which admits it FCFS when it has blocks for the
whole KV, then copies it in (``kv_transfer_latency_s`` + tokens × KV bytes per token per GPU /
``kv_transfer_bytes_per_s``) while the prefill replica's blocks stay parked; the first token reaches the
client when the copy lands, and the decode replica decodes from its next iteration.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_llm_exact_traces import ms

import sim
from sim.cli import main
from sim.errors import CapsimError

BASE_MS, PER_PROMPT_TOKEN_MS = 10.0, 1.0
KV_BYTES_PER_TOKEN = 2 * 32 * 4096 * 2  # llama-2-7b, bf16, one GPU: 512 KiB
COPY_LATENCY_MS, COPY_MS_PER_TOKEN = 5.0, 0.5


def scenario(tmp_path, rows, prefill=1, decode=1, **llm):
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,input_tokens,output_tokens\n" + "".join(f"{a / 1000!r},{i},{o}\n" for a, i, o in rows))
    return sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(path)},
                     "input_tokens": {"distribution": "trace"}, "output_tokens": {"distribution": "trace"}},
        "llm": {"model": "llama-2-7b", "block_size": 8,
                "step_time": {"type": "coefficients", "base_s": BASE_MS / 1000,
                              "per_prefill_token_s": PER_PROMPT_TOKEN_MS / 1000},
                "disaggregation": {"prefill_replicas": prefill, "decode_replicas": decode,
                                   "kv_transfer_latency_s": COPY_LATENCY_MS / 1000,
                                   "kv_transfer_bytes_per_s": KV_BYTES_PER_TOKEN / (COPY_MS_PER_TOKEN / 1000)},
                **llm},
        "fleet": {"gpu": "H100-SXM"},
        "run": {"duration_s": rows[-1][0] / 1000 + 5.0},
    })


# ---------------------------------------------------------------- an exact trace
def test_a_prompt_is_prefilled_copied_and_decoded_elsewhere(tmp_path):
    """Block size 8. A (0 ms; 20 prompt tokens, 3 out) and B (5 ms; 12 in, 2 out) on 1 prefill + 1 decode
    replica. Iterations take 10 ms + 1 ms per prompt token; a copy 5 ms + 0.5 ms per token.
      P: A's prefill 0-30. At 30 A goes to D, which reserves its 3 blocks and copies 30-45; B's prefill
         30-52 (A's 3 blocks parked beside B's 2: 5 in use).
      D: A decodes 45-55 (its first token reached the client at 45). B handed over at 52 waits for D's
         iteration to end; at 55 D reserves its 2 blocks (5 in use) while A decodes 55-65 (A done at 65);
         B's copy 55-66; B decodes 66-76.
    """
    result = sim.run(scenario(tmp_path, [(0, 20, 3), (5, 12, 2)]), seed=0)
    b = result.batches
    rows = [(int(r), ms(s), ms(e), int(p), int(d), int(k)) for r, s, e, p, d, k in
            zip(b["replica"], b["start_s"], b["end_s"], b["prefill_tokens"], b["decode_tokens"], b["kv_blocks_used"])]
    want = [(0, 0, 30, 20, 0, 3), (0, 30, 52, 12, 0, 5), (1, 45, 55, 0, 1, 3), (1, 55, 65, 0, 1, 5),
            (1, 66, 76, 0, 1, 2)]
    np.testing.assert_allclose(rows, want, atol=1e-6)
    r = result.requests
    assert [ms(x) for x in r["start_s"]] == [0.0, 30.0]
    assert [ms(x) for x in r["first_token_s"]] == pytest.approx([45.0, 66.0])
    assert [ms(x) for x in r["end_s"]] == pytest.approx([65.0, 76.0])
    assert r["replica"].tolist() == [0, 0] and r["decode_replica"].tolist() == [1, 1]
    assert result.replicas["role"].tolist() == ["prefill", "decode"]
    assert [ms(x) for x in r["tpot_s"]] == pytest.approx([10.0, 10.0])


def test_a_one_token_answer_never_leaves_the_prefill_replica(tmp_path):
    result = sim.run(scenario(tmp_path, [(0, 20, 1)]), seed=0)
    assert result.batches["replica"].tolist() == [0]
    r = result.requests
    assert r["decode_replica"].tolist() == [0] and ms(r["first_token_s"][0]) == pytest.approx(30.0)


def test_requests_that_meet_no_one_follow_the_closed_form(tmp_path):
    """Requests 2 s apart, random lengths: TTFT = prefill (10 + in ms) + copy (5 + in/2 ms); every later
    token one 10 ms decode iteration."""
    rng = np.random.default_rng(3)
    rows = [(2000 * k, int(rng.integers(1, 900)), int(rng.integers(2, 60))) for k in range(30)]
    r = sim.run(scenario(tmp_path, rows, prefill=2, decode=3), seed=0).requests
    ins = r["input_tokens"].to_numpy()
    np.testing.assert_allclose(r["ttft_s"] * 1000, BASE_MS + PER_PROMPT_TOKEN_MS * ins
                               + COPY_LATENCY_MS + COPY_MS_PER_TOKEN * ins, atol=1e-6)
    np.testing.assert_allclose(r["tpot_s"] * 1000, BASE_MS, atol=1e-6)
    assert set(r["replica"]) <= {0, 1} and set(r["decode_replica"]) <= {2, 3, 4}


# ---------------------------------------------------------------- accounting under pressure
def _capture_engines(monkeypatch):
    import sim.llm.run as llm_run

    engines = []

    class Recording(llm_run.LlmEngine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            engines.append(self)

    monkeypatch.setattr(llm_run, "LlmEngine", Recording)
    return engines


def pressured(**llm):
    """2 prefill + 2 decode replicas of 300 blocks (4,800 tokens) under long answers: decode replicas
    run out of blocks, preempt and recompute, and hold handed-off prompts back; prefill ones park."""
    return sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": 12},
                     "input_tokens": {"distribution": "lognormal", "mean_tokens": 400, "cv": 1.0, "max_tokens": 2000},
                     "output_tokens": {"distribution": "lognormal", "mean_tokens": 300, "cv": 1.0, "max_tokens": 1500}},
        "llm": {"model": "llama-2-7b", "num_gpu_blocks_override": 300, "max_model_len": 4096,
                "disaggregation": {"prefill_replicas": 2, "decode_replicas": 2}, **llm},
        "fleet": {"gpu": "H100-SXM", "router": "least_outstanding"},
        "run": {"duration_s": 60, "warmup_s": 5}})


def test_every_request_token_and_block_is_accounted_for_under_pressure(monkeypatch):
    engines = _capture_engines(monkeypatch)
    result = sim.run(pressured(), seed=1)
    r, b = result.requests, result.batches
    assert (r["outcome"] == "served").all() and len(r) > 500
    assert set(r["replica"]) == {0, 1} and set(r["decode_replica"]) == {2, 3}
    prefill, decode = b[b["replica"] < 2], b[b["replica"] >= 2]
    assert (prefill["decode_tokens"] == 0).all() and (prefill["preempted"] == 0).all()
    assert decode["preempted"].sum() > 0  # the pressure is real: decode replicas preempted
    # Every prompt once on a prefill replica; the decode replicas recompute only what they preempted.
    assert prefill["prefill_tokens"].sum() == r["input_tokens"].sum()
    assert (decode["prefill_tokens"].sum() > 0) == (r["preemptions"].sum() > 0)
    assert b["output_tokens"].sum() == r["output_tokens"].sum()  # every token emitted once, wherever
    assert (b["kv_blocks_used"] <= 300).all()
    assert prefill["kv_blocks_used"].max() > 150  # prompts parked while decode replicas had no room
    assert result.timeseries["waiting_sequences"].max() > 0
    assert (r["first_token_s"] > r["start_s"]).all() and (r["end_s"] >= r["first_token_s"]).all()
    for engine in engines:
        for rep in engine.replicas():
            s = rep.sched
            assert not s.parked and not s.pulling and not s.landed and not s.running and not s.waiting
            assert s.used_blocks == 0 and s.free_blocks == s.total_blocks  # no prefix cache here


def test_the_same_seed_gives_the_same_records():
    a, b = sim.run(pressured(), seed=4), sim.run(pressured(), seed=4)
    assert a.requests.equals(b.requests) and a.batches.equals(b.batches)


# ---------------------------------------------------------------- what it is for
def colocated_and_disaggregated(**disaggregation):
    """Chat on 4 H100s running Llama-3-8B with long prompts: 4 mixed replicas, or 2 prefill + 2 decode."""
    def make(pools):
        llm = {"model": "llama-3-8b", "max_num_batched_tokens": 2048, "slo": {"ttft_s": 1.0, "tpot_s": 0.03}}
        if pools:
            llm["disaggregation"] = {"prefill_replicas": 2, "decode_replicas": 2, **disaggregation}
        return sim.scenario_from_dict({
            "workload": {"arrivals": {"process": "poisson", "rate_rps": 12},
                         "input_tokens": {"distribution": "lognormal", "mean_tokens": 3000, "cv": 0.5, "max_tokens": 7000},
                         "output_tokens": {"distribution": "lognormal", "mean_tokens": 200, "cv": 0.8, "max_tokens": 1000}},
            "llm": llm, "fleet": {"gpu": "H100-SXM", "replicas": 4, "router": "least_outstanding"},
            "run": {"duration_s": 120, "warmup_s": 10}})
    return sim.run(make(False), seed=0).summary, sim.run(make(True), seed=0).summary


def test_separate_pools_take_prefill_out_of_the_time_between_tokens():
    """Long prompts chunked into every iteration stretch the mixed replicas' time per output token; the
    decode pool's iterations carry decodes only. Same GPUs, same cost."""
    mixed, split = colocated_and_disaggregated()
    print({k: (mixed[k], split[k]) for k in ("tpot_p99_s", "ttft_p99_s", "capacity_rps", "cost_usd")})
    assert split["cost_usd"] == pytest.approx(mixed["cost_usd"])
    assert split["tpot_p99_s"] < 0.7 * mixed["tpot_p99_s"]
    assert split["requests_served"] == mixed["requests_served"]


def test_copies_share_a_link_one_at_a_time(tmp_path):
    """A (200 prompt tokens) and B (20), both at 0 ms, one prefill replica, two decode replicas. A prefills
    0-210 ms and its 100 ms of bytes leave at 210-310 (lands at 315); B prefills 210-240, but the prefill
    replica's links are A's until 310: B's 10 ms copy runs 310-320 and lands at 325, not at 255."""
    result = sim.run(scenario(tmp_path, [(0, 200, 3), (0, 20, 3)], decode=2), seed=0)
    r = result.requests
    np.testing.assert_allclose(r["first_token_s"] * 1000, [315.0, 325.0], atol=1e-6)
    assert sorted(r["decode_replica"]) == [1, 2]


def test_a_link_too_slow_for_the_kv_is_the_bottleneck():
    """12 requests/s of 3,000-token prompts (393 MB of Llama-3-8B KV each, 4.7 GB/s in all) over two
    prefill replicas' links: 40 GB/s each carries them; 1 GB/s each cannot (2.4 GB/s offered per link),
    the copies queue without bound and the run is unstable, though both pools have room."""
    _, fast = colocated_and_disaggregated()
    _, slow = colocated_and_disaggregated(kv_transfer_bytes_per_s=1e9)
    assert not fast["unstable"] and slow["unstable"]
    assert slow["capacity_rps"] == fast["capacity_rps"]  # the pools' ceiling; the links are not in it


# ---------------------------------------------------------------- the scenario's rules
def test_the_fleet_is_the_two_pools(tmp_path):
    sc = scenario(tmp_path, [(0, 20, 3)], prefill=3, decode=2)
    assert sc.fleet.replicas == 5
    again = sim.scenario_from_dict({**json.loads(json.dumps(sc.model_dump(mode="json", exclude={"base_dir"}))),
                                    "llm": {**sc.llm.model_dump(mode="json"),
                                            "disaggregation": {"prefill_replicas": 1, "decode_replicas": 1}}})
    assert again.fleet.replicas == 2  # follows the pools, even from a dump that carried the old sum


def test_a_fleet_autoscaler_is_refused_in_one_line(tmp_path, capsys):
    import yaml

    data = {"workload": {"arrivals": {"process": "poisson", "rate_rps": 5},
                         "input_tokens": {"distribution": "fixed", "tokens": 100},
                         "output_tokens": {"distribution": "fixed", "tokens": 10}},
            "llm": {"model": "llama-3-8b", "disaggregation": {"prefill_replicas": 1, "decode_replicas": 1}},
            "fleet": {"gpu": "H100-SXM"},
            "autoscaler": {"type": "hpa", "min_replicas": 1, "max_replicas": 4,
                           "metrics": [{"type": "pods", "name": "kv_cache_utilization", "target_average_value": 0.5}]},
            "run": {"duration_s": 10}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    assert main(["simulate", str(tmp_path / "s.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "autoscaler.type = 'hpa': with llm.disaggregation each pool has its own" in err
    assert err.count("\n") == 1
    data["llm"]["disaggregation"]["decode_replicas"] = 0
    data.pop("autoscaler")
    with pytest.raises(CapsimError, match="llm.disaggregation.decode_replicas = 0: must be greater than or equal to 1"):
        sim.scenario_from_dict(data)


# ---------------------------------------------------------------- planning the pools
def test_plan_sizes_the_pools_worked_by_hand(tmp_path):
    """tests/test_llm_planner.py's tiny scenario (39 requests/s of 32 + 32 tokens; an iteration 10 ms + 1 ms
    per decoding sequence, prompts free) split into pools. Prefill costs one 10 ms iteration per 8
    prompts, so one prefill replica carries 800 requests/s; the decode pool has the mixed fleet's TPOT
    arithmetic (analytic_replicas: 3 replicas of at most 16.5 requests/s each). Cheapest: 1 + 3 L4s."""
    from test_llm_planner import TINY, TPOT_SLO_S, analytic_replicas

    from sim.planner.llm import llm_space
    from sim.planner.search import Evaluator, plan

    scenario = sim.scenario_from_dict({**TINY, "fleet": {"gpu": "L4", "router": "round_robin"},
                                       "llm": {**TINY["llm"], "disaggregation": {"prefill_replicas": 1,
                                                                                 "decode_replicas": 1}}})
    extra = {"llm.disaggregation.prefill_replicas": [1, 2], "llm.disaggregation.decode_replicas": [2, 3, 4]}
    space = llm_space(scenario, gpus=["L4"], tensor_parallel=[1], max_num_seqs=[16], extra=extra)
    result = plan(scenario, space, Evaluator(scenario, 1, 1, checkpoint_dir=tmp_path / "ck", progress=False),
                  "bisect")
    best = result.best
    assert (best["llm.disaggregation.prefill_replicas"], best["llm.disaggregation.decode_replicas"]) == (1, 3)
    assert analytic_replicas(16) == 3 and best["tpot_upper_s"] <= TPOT_SLO_S
    assert best["cost_per_hour_usd"] == pytest.approx(4 * 0.8048)
    assert len(result.table) == 6 and "fleet.replicas" not in extra  # the pools alone size the fleet
    assert any("grid search ran instead" in note for note in result.notes)
    with pytest.raises(CapsimError, match="--replicas: with llm.disaggregation the fleet is its prefill and decode"):
        plan(scenario, llm_space(scenario, gpus=["L4"], tensor_parallel=[1], max_num_seqs=[16], replicas=[2, 3]),
             Evaluator(scenario, 1, 1, checkpoint_dir=tmp_path / "ck2", progress=False), "grid")


def test_a_conversation_finds_its_last_prompt_cached_on_the_prefill_side():
    """llm/chat_multi_turn on 1 prefill + 1 decode replica, room for every conversation: the prefill replica
    keeps each turn's prompt (the shared prefix and the history it carried), not the reply generated on the
    decode replica, so turn k takes exactly ⌊prompt of turn k − 1 / block⌋ blocks from the cache."""
    from sim.scenario.keys import updated
    from sim.scenario.load import load_scenario

    sc = updated(load_scenario("llm/chat_multi_turn"), {
        "llm.disaggregation": {"prefill_replicas": 1, "decode_replicas": 1}, "run.duration_s": 120,
        "run.warmup_s": 10})
    r = sim.run(sc, seed=0).requests.sort_values(["conversation", "turn"])
    assert (r["outcome"] == "served").all()
    block = sc.llm.block_size
    later = r[r["turn"] > 1]
    previous_prompt = r.groupby("conversation")["input_tokens"].shift(1)[later.index]
    assert len(later) > 50
    np.testing.assert_array_equal(later["cached_tokens"], (previous_prompt // block * block).astype(int))
    assert set(r["decode_replica"]) == {1}


# ---------------------------------------------------------------- pools of their own GPUs
def test_a_pool_s_tensor_parallelism_sets_its_gpus_and_the_links_its_kv_crosses(tmp_path):
    """Llama-2-7B's 512 KiB of KV a token, spread over a replica's GPUs; each GPU of the smaller replica
    copies over its own link. Both pools at TP 2: two links, 0.25 ms a token. Prefill at TP 2 and decode
    at TP 1: one link, 0.5 ms a token, as at TP 1 on both. The GPUs are billed per pool."""
    rows = [(2000 * k, 100 * (k + 1), 5) for k in range(4)]

    def ttft_minus_prefill_ms(**pools):
        sc = scenario(tmp_path, rows, **{"disaggregation": {
            "prefill_replicas": 1, "decode_replicas": 1, "kv_transfer_latency_s": COPY_LATENCY_MS / 1000,
            "kv_transfer_bytes_per_s": KV_BYTES_PER_TOKEN / (COPY_MS_PER_TOKEN / 1000), **pools}})
        result = sim.run(sc, seed=0)
        r = result.requests
        return (r["ttft_s"] * 1000 - BASE_MS - PER_PROMPT_TOKEN_MS * r["input_tokens"]).to_numpy(), result

    ins = np.array([100, 200, 300, 400])
    both, result = ttft_minus_prefill_ms(prefill_tensor_parallel=2, decode_tensor_parallel=2)
    np.testing.assert_allclose(both, COPY_LATENCY_MS + COPY_MS_PER_TOKEN / 2 * ins, atol=1e-6)
    assert result.replicas["gpus"].tolist() == [2, 2] and result.summary["gpus_per_replica"] == 2
    mixed, result = ttft_minus_prefill_ms(prefill_tensor_parallel=2)
    np.testing.assert_allclose(mixed, COPY_LATENCY_MS + COPY_MS_PER_TOKEN * ins, atol=1e-6)
    assert result.replicas["gpus"].tolist() == [2, 1] and result.summary["gpus_per_replica"] == 1.5
    assert result.summary["cost_per_hour_usd"] == pytest.approx(3 * 12.29)  # 3 H100s


def test_a_decode_pool_on_cheaper_gpus():
    """Llama-3-8B: prefill on an H100, decode on an L40S. Decode iterations read memory at the L40S's
    864 GB/s instead of the H100's 3.35 TB/s, so TPOT rises by about that ratio; its 48 GB hold fewer KV
    blocks; an hour costs $12.29 + $1.861 instead of 2 × $12.29. TTFT moves by less than one decode
    iteration: a prompt handed over waits for the decode replica's iteration in progress to end before
    its blocks are reserved and its copy starts (as a vLLM decode instance takes it at its next step)."""
    def run(decode_gpu):
        pools = {"prefill_replicas": 1, "decode_replicas": 1}
        if decode_gpu:
            pools["decode_gpu"] = decode_gpu
        return sim.run(sim.scenario_from_dict({
            "workload": {"arrivals": {"process": "poisson", "rate_rps": 2},
                         "input_tokens": {"distribution": "fixed", "tokens": 1000},
                         "output_tokens": {"distribution": "fixed", "tokens": 100}},
            "llm": {"model": "llama-3-8b", "disaggregation": pools},
            "fleet": {"gpu": "H100-SXM"}, "run": {"duration_s": 60, "warmup_s": 5}}), seed=0)

    h100, l40s = run(None), run("L40S")
    assert l40s.summary["cost_per_hour_usd"] == pytest.approx(12.29 + 1.861)
    assert h100.summary["cost_per_hour_usd"] == pytest.approx(2 * 12.29)
    assert l40s.summary["tpot_p50_s"] / h100.summary["tpot_p50_s"] == pytest.approx(3.35e12 / 864e9, rel=0.1)
    assert 0 < l40s.summary["ttft_p50_s"] - h100.summary["ttft_p50_s"] < l40s.summary["tpot_p50_s"]
    blocks = l40s.replicas.set_index("role")["kv_blocks"]
    assert blocks["decode"] < blocks["prefill"] == h100.replicas["kv_blocks"].iloc[0]
    assert l40s.summary["kv_cache_blocks"] == blocks["decode"]


def test_a_pool_that_cannot_serve_the_model_is_named_in_one_line():
    data = {"workload": {"arrivals": {"process": "poisson", "rate_rps": 1},
                         "input_tokens": {"distribution": "fixed", "tokens": 100},
                         "output_tokens": {"distribution": "fixed", "tokens": 10}},
            "llm": {"model": "llama-2-13b", "disaggregation": {"prefill_replicas": 1, "decode_replicas": 1,
                                                                "decode_gpu": "L4"}},
            "fleet": {"gpu": "H100-SXM"}, "run": {"duration_s": 10}}
    with pytest.raises(CapsimError, match=r"llm.disaggregation, the decode pool \(L4 × tensor_parallel 1\): "
                                          r"llm.tensor_parallel = 1: llama-2-13b"):
        sim.scenario_from_dict(data)
    data["llm"]["disaggregation"]["decode_gpu"] = "TPU"
    with pytest.raises(CapsimError, match=r"the decode pool \(TPU × tensor_parallel 1\): fleet.gpu = 'TPU'"):
        sim.scenario_from_dict(data)


# ---------------------------------------------------------------- pools that scale
def spiky(**pools):
    """Long prompts at 3 requests/s, 14 during 60-180 s; 1 prefill + 1 decode replica to start."""
    return sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "spike", "base_rps": 3, "spike_rps": 14, "start_s": 60,
                                  "duration_s": 120, "ramp_s": 10},
                     "input_tokens": {"distribution": "lognormal", "mean_tokens": 3000, "cv": 0.5, "max_tokens": 7000},
                     "output_tokens": {"distribution": "lognormal", "mean_tokens": 200, "cv": 0.8, "max_tokens": 1000}},
        "llm": {"model": "llama-3-8b", "slo": {"ttft_s": 1.0, "tpot_s": 0.03},
                "disaggregation": {"prefill_replicas": 1, "decode_replicas": 1, **pools}},
        "fleet": {"gpu": "H100-SXM", "router": "least_outstanding"},
        "cold_start": {"provision_s": 2, "readiness_period_s": 5},
        "run": {"duration_s": 300, "warmup_s": 10, "seed": 1, "sample_interval_s": 1}})


def hpa(metric: str, target: float, **more) -> dict:
    return {"type": "hpa", "min_replicas": 1, "max_replicas": 4,
            "metrics": [{"type": "pods", "name": metric, "target_average_value": target}],
            "behavior": {"scale_up": {"stabilization_window_s": 0}, "scale_down": {"stabilization_window_s": 30}},
            **more}


def test_each_pool_scales_on_its_own_metrics_and_is_billed_at_its_price(monkeypatch):
    """The spike needs more prefill (queued prompts per replica) and more decode (KV in use): each pool's
    HPA adds replicas of its own role, GPU and price, and drains them after; nothing is lost, no replica
    runs after it is gone, every block comes back, and the cost is each replica's billed hours × its price."""
    engines = _capture_engines(monkeypatch)
    fixed = sim.run(spiky()).summary
    result = sim.run(spiky(decode_gpu="A100-80GB", prefill_autoscaler=hpa("in_flight", 2),
                           decode_autoscaler=hpa("kv_cache_utilization", 0.3)))
    s, reps, r = result.summary, result.replicas, result.requests
    added = reps[reps["created_s"] > 0]
    assert set(added["role"]) == {"prefill", "decode"}
    assert (added["gone_s"] < 300).all()  # drained after the spike
    assert (r["outcome"] == "served").all() and not s["unstable"]
    assert s["ttft_p99_s"] < 0.5 * fixed["ttft_p99_s"]
    b = result.batches
    gone = dict(zip(reps["replica"], reps["gone_s"]))
    assert (b["end_s"] <= b["replica"].map(gone) + 1e-9).all()
    price = reps["role"].map({"prefill": 12.29, "decode": 5.12})
    hours = (np.minimum(reps["gone_s"], 300) - reps["created_s"]).clip(lower=0) / 3600
    assert s["cost_usd"] == pytest.approx(float((hours * price).sum()))
    ts = result.timeseries
    assert ts["cost_rate_usd_per_h"].max() > 12.29 + 5.12
    for rep in engines[-1].replicas():
        sched = rep.sched
        assert not sched.parked and not sched.pulling and not sched.running and not sched.waiting
        assert sched.used_blocks == sched.evictable_blocks  # only cached prefixes, if any, are left


def test_a_prefill_pool_scales_to_zero_and_back(tmp_path):
    """A KPA with min 0 on the prefill pool and 130 s without traffic: the pool goes to zero while the decode
    pool stays; the next request waits at the activator while the pool scales from zero (a cold start),
    and every request is served."""
    path_rows = [0.5 * k for k in range(40)] + [150 + 0.5 * k for k in range(40)]
    folder = tmp_path
    (folder / "t.csv").write_text("arrival_s,input_tokens,output_tokens\n" + "".join(f"{t},500,20\n" for t in path_rows))
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(folder / "t.csv")},
                     "input_tokens": {"distribution": "trace"}, "output_tokens": {"distribution": "trace"}},
        "llm": {"model": "llama-3-8b", "disaggregation": {
            "prefill_replicas": 1, "decode_replicas": 1,
            "prefill_autoscaler": {"type": "kpa", "min_replicas": 0, "max_replicas": 2, "stable_window_s": 30,
                                   "scale_to_zero_grace_s": 10}}},
        "fleet": {"gpu": "H100-SXM"}, "cold_start": {"provision_s": 2},
        "run": {"duration_s": 200, "seed": 1}})
    result = sim.run(sc)
    r, reps = result.requests, result.replicas
    assert (r["outcome"] == "served").all()
    prefill = reps[reps["role"] == "prefill"]
    assert (prefill["gone_s"] < 150).any() and (prefill["created_s"] >= 150).any()  # gone, then back from zero
    ts = result.timeseries
    quiet = ts[(ts["time_s"] > 100) & (ts["time_s"] < 150)]
    assert (quiet["ready_replicas"] == 1).all()  # the decode replica alone
    late = r[r["arrival_s"] >= 150]
    assert late["ttft_s"].iloc[0] > 2.0  # the first late request waited for a cold start
    assert (reps[reps["role"] == "decode"]["created_s"] == 0).all()  # the decode pool stayed fixed


@pytest.mark.parametrize(("pools", "message"), [
    ({"prefill_replicas": 5, "prefill_autoscaler": hpa("in_flight", 2)},
     "llm.disaggregation.prefill_replicas = 5: the pool starts there, so it must lie within"),
    ({"decode_autoscaler": hpa("in_flight", 2, initial_replicas=2)},
     "llm.disaggregation.decode_autoscaler.initial_replicas = 2: the pool starts at"),
    ({"decode_autoscaler": {"type": "kpa", "min_replicas": 0, "max_replicas": 3}},
     "llm.disaggregation.decode_autoscaler.min_replicas = 0: a decode pool keeps at least 1 replica"),
])
def test_bad_pool_autoscalers_are_one_line(pools, message):
    with pytest.raises(CapsimError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spiky(**pools)
