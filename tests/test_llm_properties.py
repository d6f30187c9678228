"""Properties of token-level serving that hold for every scenario: every request accounted for once, tokens
conserved across preemptions, time order per request, budgets and memory never exceeded, determinism.

Hypothesis draws small llm scenarios (a few dozen requests, 1-3 replicas, tight KV caches that force
preemptions, chunked prefill on or off, any router) with a linear iteration time.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import sim
from sim.serving.routers import ROUTERS

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
EPS = 1e-9


@st.composite
def llm_scenarios(draw):
    chunked = draw(st.booleans())
    max_len = draw(st.sampled_from([64, 128]))
    seqs = draw(st.integers(1, 8))
    budget = draw(st.integers(max(seqs, 1 if chunked else max_len), 256))
    tokens = {"distribution": "lognormal", "mean_tokens": draw(st.sampled_from([5.0, 20.0])), "cv": 1.0,
              "max_tokens": max_len // 2}
    return sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": draw(st.sampled_from([20, 200]))},
                     "input_tokens": tokens,
                     "output_tokens": {**tokens, "mean_tokens": draw(st.sampled_from([3.0, 30.0, 60.0]))}},
        "llm": {"model": "llama-2-7b", "block_size": 8, "max_model_len": max_len, "max_num_seqs": seqs,
                "max_num_batched_tokens": budget, "enable_chunked_prefill": chunked,
                "num_gpu_blocks_override": draw(st.integers(max_len // 8, max_len // 4)),
                "step_time": {"type": "coefficients", "base_s": 0.002, "per_prefill_token_s": 1e-5,
                              "per_decode_token_s": 5e-5, "per_kv_token_s": 1e-7}},
        "fleet": {"gpu": "H100-SXM", "replicas": draw(st.integers(1, 3)), "router": draw(st.sampled_from(list(ROUTERS)))},
        "run": {"requests": draw(st.integers(1, 60)), "seed": draw(st.integers(0, 2**16))},
    })


@SETTINGS
@given(llm_scenarios())
def test_every_request_is_served_once_with_all_its_tokens(sc):
    result = sim.run(sc)
    r, b = result.requests, result.batches
    assert len(r) == sc.run.requests and (r["outcome"] == "served").all()
    assert r["id"].tolist() == list(range(len(r)))
    # Tokens conserved: each output token is emitted by exactly one iteration, preemptions or not.
    assert b["output_tokens"].sum() == r["output_tokens"].sum()
    # Prompts are computed once, plus prompt and emitted tokens again for each preemption (recompute).
    assert b["prefill_tokens"].sum() >= r["input_tokens"].sum()
    if r["preemptions"].sum() == 0:
        assert b["prefill_tokens"].sum() == r["input_tokens"].sum()
    assert b["preempted"].sum() == r["preemptions"].sum() == result.summary["preemptions"]
    assert ((r["input_tokens"] >= 1) & (r["output_tokens"] >= 1)
            & (r["input_tokens"] + r["output_tokens"] <= sc.llm.max_model_len)).all()


@SETTINGS
@given(llm_scenarios())
def test_time_order_budgets_and_memory(sc):
    result = sim.run(sc)
    r, b = result.requests, result.batches
    llm = sc.llm
    assert (r["arrival_s"] <= r["start_s"] + EPS).all()
    assert (r["start_s"] < r["first_token_s"] + EPS).all() and (r["first_token_s"] <= r["end_s"] + EPS).all()
    one = r["output_tokens"] == 1
    assert (r.loc[one, "first_token_s"] == r.loc[one, "end_s"]).all() and r.loc[one, "tpot_s"].isna().all()
    assert (r.loc[~one, "tpot_s"] > 0).all()
    assert (b["size"] <= llm.max_num_seqs).all()
    assert (b["prefill_tokens"] + b["decode_tokens"] <= llm.max_num_batched_tokens).all()
    assert (b["kv_blocks_used"] <= llm.num_gpu_blocks_override).all()
    if not llm.enable_chunked_prefill:
        assert ((b["prefill_tokens"] == 0) | (b["decode_tokens"] == 0)).all()
    for _, it in b.groupby("replica"):  # one iteration at a time per replica
        start, end = it["start_s"].to_numpy(), it["end_s"].to_numpy()
        assert (np.diff(start) > 0).all() and (start[1:] >= end[:-1] - EPS).all()


@settings(max_examples=5, deadline=None, derandomize=True)
@given(llm_scenarios())
def test_same_seed_same_run(sc):
    a, b = sim.run(sc), sim.run(sc)
    assert a.requests.equals(b.requests) and a.batches.equals(b.batches)
