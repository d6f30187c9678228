"""Host/device overlap against the two-stage tandem line: exact pipelined times with deterministic stages
(worked by hand), throughput 1/max(H, D) against 1/(H + D) at saturation, and the blocked exponential
line's μ₁μ₂(μ₁ + μ₂)/(μ₁² + μ₁μ₂ + μ₂²) (sim/theory/overlap.py)."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.theory.overlap import blocking_tandem_batches_per_s, pipelined_batches_per_s, serial_batches_per_s


def _burst(write_trace, mode: str, host_ms: float, device_ms: float, n: int = 6):
    """n requests at t = 0, batches of one, one replica: the replica is saturated from the start."""
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(write_trace([0.0] * n))}},
        "service": {"type": "parametric", "base_s": device_ms / 1000},
        "overlap": {"mode": mode, "host_s": host_ms / 1000},
        "run": {"duration_s": 1.0}})
    return sim.run(sc)


def test_pipelined_times_with_a_slower_device_by_hand(write_trace):
    """H = 3 ms, D = 5 ms. Batch 0: host 0-3, device 3-8. Batch 1 (the second buffer, formed at 0): host 3-6,
    device 8-13. Batch 2 is formed when batch 0 is done (8): host 8-11, device 13-18; and so on: one batch
    every max(H, D) = 5 ms."""
    result = _burst(write_trace, "pipelined", 3, 5)
    b = result.batches
    np.testing.assert_allclose(b["start_s"] * 1e3, [0, 0, 8, 13, 18, 23], atol=1e-9)
    np.testing.assert_allclose(b["host_start_s"] * 1e3, [0, 3, 8, 13, 18, 23], atol=1e-9)
    np.testing.assert_allclose(b["device_start_s"] * 1e3, [3, 8, 13, 18, 23, 28], atol=1e-9)
    np.testing.assert_allclose(b["end_s"] * 1e3, [8, 13, 18, 23, 28, 33], atol=1e-9)


def test_pipelined_times_with_a_slower_host_by_hand(write_trace):
    """H = 5 ms, D = 3 ms. Batch 1's host waits for batch 0's (5-10); batch 2, formed at 8 when batch 0 is
    done, waits for the host until 10: host 10-15, device 15-18; one batch every max(H, D) = 5 ms."""
    b = _burst(write_trace, "pipelined", 5, 3).batches
    np.testing.assert_allclose(b["host_start_s"] * 1e3, [0, 5, 10, 15, 20, 25], atol=1e-9)
    np.testing.assert_allclose(b["end_s"] * 1e3, [8, 13, 18, 23, 28, 33], atol=1e-9)


def test_serial_loop_takes_host_plus_device(write_trace):
    b = _burst(write_trace, "serial", 3, 5).batches
    np.testing.assert_allclose(b["end_s"] * 1e3, [8, 16, 24, 32, 40, 48], atol=1e-9)
    np.testing.assert_allclose(b["device_start_s"] - b["host_start_s"], 0.003, atol=1e-12)


def _saturated(mode: str, distribution: str) -> dict:
    """Offered 1,400 req/s to one replica whose stages take 1 ms each on average, for 30 s."""
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": 1400}},
        "service": {"type": "parametric", "base_s": 0.001, "distribution": distribution},
        "overlap": {"mode": mode, "host_s": 0.001, "host_distribution": distribution},
        "run": {"duration_s": 30, "seed": 2, "drain_s": 0}})
    return sim.run(sc).summary


def test_saturated_throughput_is_one_over_the_slowest_stage():
    pipelined, serial = _saturated("pipelined", "deterministic"), _saturated("serial", "deterministic")
    assert pipelined["throughput_rps"] == pytest.approx(pipelined_batches_per_s(0.001, 0.001), rel=0.002)
    assert serial["throughput_rps"] == pytest.approx(serial_batches_per_s(0.001, 0.001), rel=0.002)
    assert pipelined["overlap_gain"] == pytest.approx(2.0)
    assert pipelined["capacity_rps"] == pytest.approx(1000) and serial["capacity_rps"] == pytest.approx(500)
    assert pipelined["device_utilization"] == pytest.approx(1.0, abs=0.01)


def test_exponential_stages_match_the_blocked_tandem_line():
    """About 20,000 batches: the throughput within 3% of 2μ/3 (pipelined) and μ/2 (serial)."""
    pipelined, serial = _saturated("pipelined", "exponential"), _saturated("serial", "exponential")
    assert pipelined["throughput_rps"] == pytest.approx(blocking_tandem_batches_per_s(1000, 1000), rel=0.03)
    assert serial["throughput_rps"] == pytest.approx(500, rel=0.03)


@pytest.mark.parametrize(("overlap", "fleet", "message"), [
    ({"mode": "pipelined"}, {}, "overlap.host_s: missing; the service has no measured host overhead"),
    ({"host_s": 0.001}, {"instances_per_replica": 2}, "fleet.instances_per_replica = 2: the pipelined loop"),
    ({"host_s": 0.001, "host_distribution": "gamma"}, {}, "host_distribution 'gamma' needs host_cv"),
    ({"mode": "parallel", "host_s": 0.001}, {}, "overlap.mode = 'parallel'"),
])
def test_bad_overlap_values_are_one_line_errors(overlap, fleet, message):
    with pytest.raises(sim.ScenarioError, match=message) as info:
        sim.scenario_from_dict({"workload": {"arrivals": {"process": "poisson", "rate_rps": 5}},
                                "service": {"type": "parametric", "base_s": 0.01}, "fleet": fleet,
                                "overlap": overlap, "run": {"duration_s": 1}})
    assert "\n" not in str(info.value)
