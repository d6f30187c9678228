"""Exact traces of token-level serving: a few requests through a fixed 10 ms iteration, worked by hand.

Requests are replayed from a trace with ``arrival_s, input_tokens, output_tokens`` columns (the token
columns of the trace itself). Every iteration takes 10 ms (``step_time: coefficients, base_s: 0.01``), so
each request's times can be read off the iteration grid. Tables are in milliseconds. A request row is
``(id, start_ms, first_token_ms, end_ms, preemptions)``; an iteration row is ``(start_ms, sequences,
prefill_tokens, decode_tokens, kv_blocks_used, preempted)``.

Scheduler rules under test (sim.llm.scheduler, docs/llm.md): decodes first, then prompt chunks of
running sequences, then FCFS admissions, within ``max_num_batched_tokens``; admission takes blocks for
the whole prompt; a decode opening a new block with none free preempts the most recently admitted
running sequence (recompute), possibly itself; no admission in an iteration that preempted.
"""

from __future__ import annotations

import math

import numpy as np

import sim

STEP_MS = 10.0


def simulate(tmp_path, rows, **llm):
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,input_tokens,output_tokens\n" + "".join(f"{a / 1000!r},{i},{o}\n" for a, i, o in rows))
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(path)},
                     "input_tokens": {"distribution": "trace"}, "output_tokens": {"distribution": "trace"}},
        "llm": {"model": "llama-2-7b", "block_size": 8, "step_time": {"type": "coefficients", "base_s": STEP_MS / 1000},
                **llm},
        "fleet": {"gpu": "H100-SXM"},
        "run": {"duration_s": rows[-1][0] / 1000 + 1.0},
    })
    return sim.run(sc, seed=0)


def ms(x: float) -> float:
    return math.nan if math.isnan(x) else round(x * 1000, 6)


def request_table(result):
    r = result.requests
    return [(int(i), ms(s), ms(f), ms(e), int(p)) for i, s, f, e, p in
            zip(r["id"], r["start_s"], r["first_token_s"], r["end_s"], r["preemptions"])]


def iteration_table(result):
    b = result.batches
    return [(ms(s), int(n), int(p), int(d), int(k), int(x)) for s, n, p, d, k, x in
            zip(b["start_s"], b["size"], b["prefill_tokens"], b["decode_tokens"], b["kv_blocks_used"], b["preempted"])]


def assert_rows(actual, expected):
    print()
    for row in actual:
        print("   ", row)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, atol=1e-6, equal_nan=True)  # a nanosecond, in ms


def test_chunked_prefill_admission_and_decode_order(tmp_path):
    """Budget 8 tokens: r0's 12-token prompt takes two iterations (8, then 4 beside r1's whole prompt);
    both decode from 20 ms, with r2's prompt in the budget left; r1 and r2 (one output token: done at its
    prefill) end at 30 ms, r0 at 40 ms."""
    result = simulate(tmp_path, [(0, 12, 3), (5, 4, 2), (12, 3, 1)], max_num_batched_tokens=8, max_num_seqs=4,
                      max_model_len=64, num_gpu_blocks_override=100)
    assert_rows(iteration_table(result), [
        (0.0, 1, 8, 0, 2, 0),  # r0 admitted: 2 blocks for its whole prompt, first chunk of 8
        (10.0, 2, 8, 0, 3, 0),  # r0's last 4 tokens, then r1 (arrived at 5) whole
        (20.0, 3, 3, 2, 4, 0),  # decodes first (r0, r1), then r2 (arrived at 12)
        (30.0, 1, 0, 1, 2, 0),  # r0's last token
    ])
    assert_rows(request_table(result), [
        (0, 0.0, 20.0, 40.0, 0),
        (1, 10.0, 20.0, 30.0, 0),
        (2, 20.0, 30.0, 30.0, 0),
    ])
    r = result.requests
    np.testing.assert_allclose(r["ttft_s"] * 1000, [20, 15, 18], atol=1e-6)
    np.testing.assert_allclose(r["tpot_s"][:2] * 1000, [10, 10], atol=1e-6)  # TPOT = the step time
    assert math.isnan(r["tpot_s"][2])  # one output token: no time per output token


def test_preemption_by_recompute(tmp_path):
    """4 blocks of 8 tokens, budget 16. r2's prompt is cut at 7 tokens; at 20 ms r1's decode needs a block:
    r2 (admitted last) is preempted. At 90 ms r0 needs its third block: r1 is preempted with 8 tokens out
    and later prefills 8 + 8 = 16 tokens (emitting its 9th). At 140 ms r2, just prefilled, needs a
    block with none free and is itself the most recent: preempted again, recomputing 8 + 1 tokens."""
    result = simulate(tmp_path, [(0, 8, 12), (1, 8, 12), (2, 8, 4)], max_num_batched_tokens=16, max_num_seqs=4,
                      max_model_len=32, num_gpu_blocks_override=4)
    decode_r0_r1 = [(t, 2, 0, 2, 4, 0) for t in (30.0, 40.0, 50.0, 60.0, 70.0, 80.0)]
    assert_rows(iteration_table(result), [
        (0.0, 1, 8, 0, 1, 0),
        (10.0, 3, 15, 1, 4, 0),  # r0's first decode opens its 2nd block; r1 whole, r2 cut at 7 (budget)
        (20.0, 2, 0, 2, 4, 1),  # r1 opens its 2nd block: r2 preempted (1 block freed)
        *decode_r0_r1,  # rounds 3-8: r2 waits for a free block
        (90.0, 1, 0, 1, 3, 1),  # r0 opens its 3rd block: r1 preempted (2 blocks freed)
        (100.0, 1, 0, 1, 3, 0),  # r1 (waiting head) needs 2 blocks for 16 tokens, 1 free: blocks the queue
        (110.0, 1, 0, 1, 3, 0),  # r0's 12th token
        (120.0, 1, 16, 0, 2, 0),  # r1 recomputes prompt + 8 emitted tokens
        (130.0, 2, 8, 1, 4, 0),  # r1 opens its 3rd block; r2 admitted again
        (140.0, 1, 0, 1, 3, 1),  # r2's first decode needs a block, none free, it is the newest: preempts itself
        (150.0, 1, 0, 1, 3, 0),  # r1's 12th token
        (160.0, 1, 9, 0, 2, 0),  # r2 recomputes 8 + 1
        (170.0, 1, 0, 1, 2, 0),
        (180.0, 1, 0, 1, 2, 0),
    ])
    assert_rows(request_table(result), [
        (0, 0.0, 10.0, 120.0, 0),
        (1, 10.0, 20.0, 160.0, 1),
        (2, 10.0, 140.0, 190.0, 2),  # its first token waited for a block: TTFT 138 ms
    ])
    r = result.requests
    np.testing.assert_allclose(r["tpot_s"] * 1000, [110 / 11, 140 / 11, 50 / 3], atol=1e-6)
    assert result.summary["preemptions"] == 3 and result.summary["requests_preempted"] == 2
    out = result.batches["output_tokens"].sum()
    assert out == r["output_tokens"].sum() == 28  # no token emitted twice, none lost, across preemptions


def test_without_chunked_prefill_an_iteration_prefills_or_decodes(tmp_path):
    """vLLM V0's default: waiting prompts are prefilled whole in iterations of their own, before decodes."""
    result = simulate(tmp_path, [(0, 6, 3), (5, 6, 2)], max_num_batched_tokens=64, max_num_seqs=4,
                      max_model_len=64, num_gpu_blocks_override=100, enable_chunked_prefill=False)
    assert_rows(iteration_table(result), [
        (0.0, 1, 6, 0, 1, 0),
        (10.0, 1, 6, 0, 2, 0),  # r1 waiting: a prefill iteration; r0 does not decode in it
        (20.0, 2, 0, 2, 2, 0),
        (30.0, 1, 0, 1, 1, 0),
    ])
    assert_rows(request_table(result), [(0, 0.0, 10.0, 40.0, 0), (1, 10.0, 20.0, 30.0, 0)])
