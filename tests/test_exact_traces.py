"""Exact event traces: hand-made arrival lists, deterministic service, every batch worked by hand.

Service is deterministic: a batch of b takes 4 + b ms, so sizes can be read from durations. Arrivals
are replayed from a trace CSV. Times in the tables are milliseconds. A batch row is
``(request ids, replica, start_ms, end_ms)``; a request row is ``(id, outcome, start_ms, end_ms)``.

Batching semantics under test (Triton, sim.serving.batching): when an instance is free and n
requests wait, send the largest preferred size ≤ n at once (max_batch_size when no preferred sizes
are set); otherwise wait until the oldest has waited max_queue_delay_s, then send min(n, max).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim

BASE_MS, PER_ITEM_MS = 4.0, 1.0


def simulate(write_trace, arrivals_ms, *, batching=None, fleet=None):
    path = write_trace([t / 1000 for t in arrivals_ms])
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(path)}},
        "service": {"type": "parametric", "base_s": BASE_MS / 1000, "per_item_s": PER_ITEM_MS / 1000,
                    "distribution": "deterministic"},
        "batching": batching or {},
        "fleet": fleet or {},
        "run": {"duration_s": max(arrivals_ms) / 1000 + 1.0},
    })
    result = sim.run(sc, seed=0)
    assert len(result.requests) == len(arrivals_ms)
    return result


def ms(x: float) -> float:
    return math.nan if math.isnan(x) else round(x * 1000, 6)


def batch_table(result) -> list[tuple[tuple[int, ...], int, float, float]]:
    """Batches as (ids, replica, start_ms, end_ms) in start order, grouped from the request records
    and checked against the batch log."""
    served = result.requests[result.requests["outcome"] == "served"]
    groups = served.groupby(["replica", "start_s", "end_s"], sort=False)["id"].apply(tuple)
    rows = sorted(((ids, int(rep), ms(s), ms(e)) for (rep, s, e), ids in groups.items()),
                  key=lambda row: (row[2], row[0]))
    log = result.batches.sort_values(["start_s", "batch"])
    assert [len(r[0]) for r in rows] == log["size"].tolist()
    assert [r[1] for r in rows] == log["replica"].tolist()
    assert [r[2] for r in rows] == [ms(s) for s in log["start_s"]]
    for ids, _, start, end in rows:
        assert end - start == pytest.approx(BASE_MS + PER_ITEM_MS * len(ids))
    return rows


def request_table(result) -> list[tuple[int, str, float, float]]:
    r = result.requests
    return [(int(i), str(o), ms(s), ms(e)) for i, o, s, e in zip(r["id"], r["outcome"], r["start_s"], r["end_s"])]


def assert_rows(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got[:-2] == want[:-2]
        np.testing.assert_allclose(got[-2:], want[-2:], atol=1e-6, equal_nan=True)


def test_max_batch_with_queue_delay(write_trace):
    """Max 4, 2 ms delay: a lone request waits out the delay; a full batch leaves on the 4th
    arrival; a backlog longer than 4 goes out in batches of 4; a request whose delay has already
    passed goes out alone as soon as an instance frees."""
    arrivals = [0, 1, 3, 4, 5, 6, 9, 10, 11, 12, 13, 40, 40.5, 41, 41.5, 50]
    result = simulate(write_trace, arrivals, batching={"max_batch_size": 4, "max_queue_delay_s": 0.002})
    assert_rows(batch_table(result), [
        ((0, 1), 0, 2.0, 8.0),  # r0's delay runs out at 2 ms with 2 waiting
        ((2, 3, 4, 5), 0, 8.0, 16.0),  # 4 waiting when the instance frees
        ((6, 7, 8, 9), 0, 16.0, 24.0),  # 5 waiting: the oldest 4
        ((10,), 0, 24.0, 29.0),  # r10 waited 11 ms > 2 ms: sent alone at once
        ((11, 12, 13, 14), 0, 41.5, 49.5),  # the 4th arrival completes a batch before the 42 ms timer
        ((15,), 0, 52.0, 57.0),
    ])


def test_preferred_batch_sizes(write_trace):
    """Max 8, preferred 4 and 6, 5 ms delay: send the largest preferred size ≤ n at once; below 4,
    wait out the delay and send all."""
    arrivals = [0, 1, 2, 6, 7, 8, 9, 10, 11, 11.5, 13, 14, 15, 16, 40, 40.5, 41, 41.5]
    result = simulate(write_trace, arrivals, batching={"max_batch_size": 8, "max_queue_delay_s": 0.005,
                                                       "preferred_batch_sizes": [4, 6]})
    assert_rows(batch_table(result), [
        ((0, 1, 2), 0, 5.0, 12.0),  # 3 < 4 waiting when r0's delay runs out: send 3
        ((3, 4, 5, 6, 7, 8), 0, 12.0, 22.0),  # 7 waiting: preferred 6
        ((9, 10, 11, 12), 0, 22.0, 30.0),  # 5 waiting: preferred 4
        ((13,), 0, 30.0, 35.0),  # 1 waiting, its delay long past
        ((14, 15, 16, 17), 0, 41.5, 49.5),  # preferred 4 formed on arrival
    ])


def test_queue_limit_counts_waiting_requests_only(write_trace):
    """max_queue_size 2: two may wait while one is in service; the next arrivals are rejected
    (end = arrival, never started)."""
    arrivals = [0, 1, 2, 3, 4, 6, 7]
    result = simulate(write_trace, arrivals, batching={"max_queue_size": 2})
    assert_rows(request_table(result), [
        (0, "served", 0.0, 5.0),
        (1, "served", 5.0, 10.0),
        (2, "served", 10.0, 15.0),
        (3, "rejected", math.nan, 3.0),  # r1, r2 waiting: full
        (4, "rejected", math.nan, 4.0),
        (5, "served", 15.0, 20.0),  # r1 left the queue at 5 ms: room again
        (6, "rejected", math.nan, 7.0),  # r2, r5 waiting
    ])
    assert result.summary["requests_rejected"] == 3


def test_request_timeouts(write_trace):
    """timeout_s 7.5 ms: a request not started by arrival + 7.5 ms is timed out, end = that deadline."""
    arrivals = [0, 1, 2, 3, 4, 12]
    result = simulate(write_trace, arrivals, batching={"timeout_s": 0.0075})
    assert_rows(request_table(result), [
        (0, "served", 0.0, 5.0),
        (1, "served", 5.0, 10.0),  # deadline 8.5: started in time
        (2, "timed_out", math.nan, 9.5),  # deadline 9.5, instance free at 10
        (3, "served", 10.0, 15.0),  # deadline 10.5
        (4, "timed_out", math.nan, 11.5),  # deadline 11.5, instance free at 15
        (5, "served", 15.0, 20.0),
    ])
    assert result.summary["requests_timed_out"] == 2


def test_batch_of_one_without_delay_is_fifo(write_trace):
    """max_batch_size 1, no delay: a single FIFO server, start = max(arrival, previous end)."""
    arrivals = [0, 2, 3, 11, 12, 30]
    result = simulate(write_trace, arrivals)
    assert_rows(request_table(result), [
        (0, "served", 0.0, 5.0),
        (1, "served", 5.0, 10.0),
        (2, "served", 10.0, 15.0),
        (3, "served", 15.0, 20.0),
        (4, "served", 20.0, 25.0),
        (5, "served", 30.0, 35.0),
    ])


def test_fifo_matches_lindley_recursion(write_trace):
    rng = np.random.default_rng(5)
    arrivals = np.round(np.cumsum(rng.exponential(6.0, 300)), 3).tolist()
    result = simulate(write_trace, arrivals)
    end = -math.inf
    for t, (_, outcome, start, finish) in zip(arrivals, request_table(result)):
        start_expected = max(t, end)
        end = start_expected + BASE_MS + PER_ITEM_MS
        assert outcome == "served"
        assert (start, finish) == pytest.approx((start_expected, end), abs=1e-6)


def test_two_instances_per_replica(write_trace):
    """instances_per_replica 2: two batches run at once from one queue."""
    result = simulate(write_trace, [0, 1, 2, 3, 8, 20], fleet={"instances_per_replica": 2})
    assert_rows(batch_table(result), [
        ((0,), 0, 0.0, 5.0),
        ((1,), 0, 1.0, 6.0),  # the second instance is free
        ((2,), 0, 5.0, 10.0),
        ((3,), 0, 6.0, 11.0),
        ((4,), 0, 10.0, 15.0),  # both busy at 8 ms
        ((5,), 0, 20.0, 25.0),
    ])
    batched = simulate(write_trace, [0, 0.5, 1, 1.5, 2], fleet={"instances_per_replica": 2},
                       batching={"max_batch_size": 2})
    assert_rows(batch_table(batched), [
        ((0,), 0, 0.0, 5.0),  # no delay: a lone request leaves at once
        ((1,), 0, 0.5, 5.5),
        ((2, 3), 0, 5.0, 11.0),  # 3 waiting when the first instance frees: the oldest 2
        ((4,), 0, 5.5, 10.5),
    ])


def test_round_robin_over_two_replicas(write_trace):
    """round_robin alternates replicas whatever their load; each replica queues its own requests."""
    result = simulate(write_trace, [0, 1, 2, 3, 4, 6.5], fleet={"replicas": 2, "router": "round_robin"})
    assert_rows(batch_table(result), [
        ((0,), 0, 0.0, 5.0),
        ((1,), 1, 1.0, 6.0),
        ((2,), 0, 5.0, 10.0),
        ((3,), 1, 6.0, 11.0),
        ((4,), 0, 10.0, 15.0),
        ((5,), 1, 11.0, 16.0),
    ])
