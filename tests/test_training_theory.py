"""The closed forms of training against hand computations and against what they summarise: the ring
all-reduce, the overlap of bucketed all-reduces with the backward pass, the pipeline bubble against the
1F1B schedule laid out op by op, the expected time under failures against seeded simulations, and the
straggler factor against sampled maxima. Each test prints its figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.theory.collectives import (
    exposed_comm_of_buckets_s,
    exposed_comm_s,
    fit_alpha_beta,
    hierarchical_allreduce_s,
    reduce_scatter_s,
    ring_allreduce_s,
)
from sim.theory.pipeline import bubble_fraction, one_f_one_b, pipelined_step_s, schedule_bubble_fraction
from sim.theory.reliability import (
    best_interval_s,
    daly_interval_s,
    expected_max_standard_normal,
    expected_wall_s,
    young_interval_s,
)
from sim.training.failures import simulate_mean_wall_s


def test_ring_allreduce_against_the_hand_computation():
    # 14 GB of fp16 gradients (a 7B model) over 8 GPUs of one node at 360 GB/s bus bandwidth, 5 us a step:
    # 2(n-1) = 14 steps, each rank moves 2(n-1)/n = 1.75 × 14 GB
    t = ring_allreduce_s(14e9, 8, 360e9, 5e-6)
    hand = 14 * 5e-6 + 1.75 * 14e9 / 360e9
    print(f"\nring all-reduce 14 GB / 8 GPUs / 360 GB/s: {t * 1e3:.3f} ms (hand {hand * 1e3:.3f} ms)")
    assert t == pytest.approx(hand, rel=1e-12) and t == pytest.approx(0.068126, rel=1e-4)
    assert ring_allreduce_s(1e9, 1, 1e9, 1.0) == 0.0  # one rank: nothing to reduce
    assert reduce_scatter_s(14e9, 8, 360e9, 5e-6) == pytest.approx(t / 2, rel=1e-12)
    # the bandwidth term tends to 2 S / beta as n grows
    assert ring_allreduce_s(1e9, 1024, 1e9) == pytest.approx(2 * 1023 / 1024, rel=1e-12)


def test_hierarchical_allreduce_is_the_ring_on_one_node_and_across_single_gpu_nodes():
    s, intra, inter = 4e9, 300e9, 50e9
    assert hierarchical_allreduce_s(s, 8, 1, intra, 5e-6, inter, 15e-6) == pytest.approx(
        ring_allreduce_s(s, 8, intra, 5e-6), rel=1e-12)
    assert hierarchical_allreduce_s(s, 1, 16, intra, 5e-6, inter, 15e-6) == pytest.approx(
        ring_allreduce_s(s, 16, inter, 15e-6), rel=1e-12)
    # 8 nodes of 8: inside 2·7/8·S/intra, across 2·7/8·(S/8)/(node network / 8) = 2·7/8·S/network
    two_level = hierarchical_allreduce_s(s, 8, 8, intra, 0.0, inter / 8, 0.0)
    hand = 1.75 * s / intra + 1.75 * s / inter
    print(f"\n4 GB over 8 nodes × 8 GPUs (NVLink 300 GB/s, 50 GB/s per node): {two_level:.4f} s (hand {hand:.4f} s)")
    assert two_level == pytest.approx(hand, rel=1e-12)


def _bucket_events(backward_s: float, comm_s: float, buckets: int) -> float:
    """What one communication stream does, event by event: bucket i is ready at i/n of the backward."""
    end = 0.0
    for i in range(1, buckets + 1):
        end = max(end, i * backward_s / buckets) + comm_s
    return max(0.0, end - backward_s)


@pytest.mark.parametrize("backward_s,comm_s,buckets", [(0.1, 0.001, 10), (0.1, 0.02, 10), (0.05, 0.05, 4),
                                                       (1.0, 0.0, 3), (0.2, 0.3, 1), (0.3, 0.011, 27)])
def test_bucket_overlap_closed_form_against_the_event_by_event_stream(backward_s, comm_s, buckets):
    closed = exposed_comm_s(backward_s, comm_s, buckets)
    events = _bucket_events(backward_s, comm_s, buckets)
    any_sizes = exposed_comm_of_buckets_s(backward_s, [1.0] * buckets, [comm_s] * buckets)
    print(f"\nbackward {backward_s} s, {buckets} buckets of {comm_s} s: exposed {closed:.6f} s (events {events:.6f})")
    assert closed == pytest.approx(events, abs=1e-12) and any_sizes == pytest.approx(events, abs=1e-12)
    assert closed >= comm_s - 1e-15  # the last bucket is never hidden
    assert closed >= buckets * comm_s - backward_s - 1e-12  # nor more communication than the backward lasts


def test_the_alpha_beta_fit_recovers_latency_and_bandwidth():
    sizes = np.array([4e3, 6.4e4, 1e6, 1.6e7, 6.4e7])
    alpha, beta, n = 40e-6, 2.5e9, 4
    times = 2 * (n - 1) * alpha + 2 * (n - 1) / n * sizes / beta
    fitted = fit_alpha_beta(sizes, times, n)
    print(f"\nfit: alpha {fitted[0] * 1e6:.2f} us (true 40), beta {fitted[1] / 1e9:.3f} GB/s (true 2.5)")
    assert fitted == pytest.approx((alpha, beta), rel=1e-9)


@pytest.mark.parametrize("stages", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("microbatches", [1, 2, 4, 7, 16, 32])
def test_pipeline_bubble_closed_form_against_the_1f1b_schedule(stages, microbatches):
    f, b = 1.0, 2.0
    ops = one_f_one_b(stages, microbatches, f, b)
    makespan = max(op.end_s for op in ops)
    closed = bubble_fraction(stages, microbatches)
    assert len(ops) == 2 * stages * microbatches
    assert makespan == pytest.approx(pipelined_step_s(stages, microbatches, f + b), rel=1e-12)
    assert schedule_bubble_fraction(ops) == pytest.approx(closed, abs=1e-12)
    if microbatches == 32:
        print(f"\n1F1B p={stages} m={microbatches}: bubble {closed:.4f} = (p-1)/(m+p-1); makespan {makespan:g}")
    # 1F1B keeps at most p micro-batches in flight on the first stage (the activation memory bound)
    in_flight, peak = 0, 0
    for op in sorted((op for op in ops if op.stage == 0), key=lambda op: op.start_s):
        in_flight += 1 if op.kind == "forward" else -1
        peak = max(peak, in_flight)
    assert peak == min(stages, microbatches)


@pytest.mark.parametrize("interval_h", [0.5, None, 4.0])
def test_expected_wall_time_under_failures_against_seeded_simulation(interval_h):
    work, checkpoint, restart, mtbf = 100 * 3600.0, 300.0, 600.0, 20 * 3600.0
    interval = daly_interval_s(checkpoint, mtbf) if interval_h is None else interval_h * 3600
    closed = expected_wall_s(work, interval, checkpoint, restart, mtbf)
    mean, se = simulate_mean_wall_s(np.random.default_rng(7), 3000, work, interval, checkpoint, restart, mtbf)
    print(f"\ninterval {interval / 3600:.2f} h: expected {closed / 3600:.2f} h (Daly), simulated {mean / 3600:.2f} "
          f"± {se / 3600:.2f} h over 3000 runs")
    assert abs(mean - closed) < 4 * se


def test_young_and_daly_intervals_sit_near_the_best_one():
    checkpoint, mtbf, work = 60.0, 50 * 3600.0, 1000 * 3600.0
    young, daly = young_interval_s(checkpoint, mtbf), daly_interval_s(checkpoint, mtbf)
    best = best_interval_s(work, checkpoint, 0.0, mtbf)
    wall = {k: expected_wall_s(work, t, checkpoint, 0.0, mtbf) for k, t in
            (("young", young), ("daly", daly), ("best", best))}
    print(f"\nYoung {young:.0f} s, Daly {daly:.0f} s, best {best:.0f} s; wall "
          + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in wall.items()))
    assert young == pytest.approx(math.sqrt(2 * 60 * 50 * 3600))
    assert abs(daly / best - 1) < 0.02 and wall["daly"] / wall["best"] - 1 < 1e-4
    assert wall["best"] <= min(wall.values()) + 1e-6


@pytest.mark.parametrize("n", [2, 8, 64, 1024])
def test_straggler_factor_is_the_expected_largest_of_n_normals(n):
    rng = np.random.default_rng(3)
    sampled = rng.standard_normal((20_000, n)).max(axis=1).mean()
    closed = expected_max_standard_normal(n)
    print(f"\nE[max of {n} standard normals]: {closed:.4f}, sampled {sampled:.4f}")
    assert closed == pytest.approx(sampled, abs=0.015)
    if n == 2:
        assert closed == pytest.approx(1 / math.sqrt(math.pi), rel=1e-9)
