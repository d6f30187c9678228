"""Edge serving: with an idle fleet the latency is exactly the round trip plus the service time (and its
distribution the convolution of the two); spill-over and site prices worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import sim

GAMMA_K, GAMMA_MEAN_S, SERVICE_MEAN_S = 4.0, 0.02, 0.01  # RTT ~ Gamma(k = 1/cv², mean), service ~ Exp(mean)


def _edge(regions, sites, **extra):
    return {"edge": {"regions": regions, "sites": sites, **extra}}


def convolution_cdf(x: np.ndarray) -> np.ndarray:
    """P(G + E ≤ x), G ~ Gamma(k, θ), E ~ Exp(μ), μθ < 1: G(x) − e^{−μx} (1 − μθ)^{−k} G_{k, θ/(1 − μθ)}(x)."""
    theta, mu = GAMMA_MEAN_S / GAMMA_K, 1 / SERVICE_MEAN_S
    a = 1 - mu * theta
    return (stats.gamma.cdf(x, GAMMA_K, scale=theta)
            - np.exp(-mu * x) * a**-GAMMA_K * stats.gamma.cdf(x, GAMMA_K, scale=theta / a))


def test_idle_fleet_latency_is_round_trip_plus_service_exactly():
    """30 edge replicas at 20 req/s of 10 ms: a request always finds one idle, so it starts RTT/2 after it was
    sent and is answered RTT/2 after its service; over ~20,000 requests the latency's law is the convolution."""
    rtt = {"central": {"mean_s": 0.08}, "eu-edge": {"mean_s": GAMMA_MEAN_S, "distribution": "gamma", "cv": 0.5}}
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": 20}},
        "service": {"type": "parametric", "base_s": SERVICE_MEAN_S, "distribution": "exponential"},
        "fleet": {"replicas": 2, "router": "least_outstanding"},
        **_edge([{"name": "eu", "share": 1.0, "rtt_s": rtt}], [{"name": "eu-edge", "replicas": 30}]),
        "run": {"duration_s": 1000, "seed": 1}})
    r = sim.run(sc).requests
    assert (r["site"] == "eu-edge").all() and (r["outcome"] == "served").all()
    half = r["network_s"] / 2
    np.testing.assert_allclose(r["start_s"], r["arrival_s"] + half, atol=1e-9)  # no queueing
    service = r["end_s"] - half - r["start_s"]
    np.testing.assert_allclose(r["latency_s"], r["network_s"] + service, atol=1e-9)
    assert stats.kstest(r["latency_s"], convolution_cdf).pvalue > 0.01
    assert stats.kstest(r["network_s"], stats.gamma(GAMMA_K, scale=GAMMA_MEAN_S / GAMMA_K).cdf).pvalue > 0.01


def test_spill_over_to_central_when_the_edge_queue_is_full(write_trace):
    """One edge replica (10 ms a request), RTT 0 to it and 100 ms to central, queue limit 2, arrivals at
    0, 1, 2, 3, 4 ms: r0 runs at once, r1 and r2 wait, r3 and r4 find 2 waiting and go to central (idle):
    latencies 10, 19, 28, 110, 110 ms."""
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(write_trace([0, 0.001, 0.002, 0.003, 0.004]))}},
        "service": {"type": "parametric", "base_s": 0.01},
        "fleet": {"replicas": 2, "router": "least_outstanding"},
        **_edge([{"name": "eu", "share": 1.0, "rtt_s": {"central": {"mean_s": 0.1}, "eu-edge": {"mean_s": 0.0}}}],
                [{"name": "eu-edge", "replicas": 1}], edge_queue_limit=2),
        "run": {"duration_s": 1.0}})
    result = sim.run(sc)
    r = result.requests
    assert r["site"].tolist() == ["eu-edge", "eu-edge", "eu-edge", "central", "central"]
    assert r["spilled"].tolist() == [False, False, False, True, True]
    np.testing.assert_allclose(r["latency_s"], [0.010, 0.019, 0.028, 0.110, 0.110], atol=1e-12)
    assert result.summary["spill_share"] == pytest.approx(0.4) and result.summary["edge_share"] == pytest.approx(0.6)


def test_each_site_is_billed_at_its_own_price():
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": 10}},
        "service": {"type": "parametric", "base_s": 0.005}, "fleet": {"replicas": 3},
        "cost": {"usd_per_replica_hour": 2.0},
        **_edge([{"name": "us", "share": 1.0, "rtt_s": {"central": {"mean_s": 0.03}, "us-east": {"mean_s": 0.01}}}],
                [{"name": "us-east", "replicas": 2, "service_time_scale": 3.0, "usd_per_replica_hour": 0.5}]),
        "run": {"duration_s": 36}})
    result = sim.run(sc)
    assert result.summary["cost_per_hour_usd"] == pytest.approx(3 * 2.0 + 2 * 0.5)
    assert result.summary["cost_usd"] == pytest.approx(7.0 / 100)
    assert (result.timeseries["cost_rate_usd_per_h"] == 7.0).all()
    assert result.summary["capacity_rps"] == pytest.approx(3 / 0.005 + 2 / 0.015)
    served_at_edge = result.batches[result.batches["replica"] >= 3]
    np.testing.assert_allclose(served_at_edge["end_s"] - served_at_edge["start_s"], 0.015)


@pytest.mark.parametrize(("edge", "message"), [
    (_edge([{"name": "a", "share": 0.5, "rtt_s": {"central": {"mean_s": 0.1}}}], [{"name": "e", "replicas": 1}]),
     "edge: region shares must sum to 1, got 0.5"),
    (_edge([{"name": "a", "share": 1.0, "rtt_s": {"central": {"mean_s": 0.1}, "x": {"mean_s": 0.0}}}],
           [{"name": "e", "replicas": 1}]), "unknown: \\['x'\\]"),
    (_edge([{"name": "a", "share": 1.0, "rtt_s": {"e": {"mean_s": 0.1}}}], [{"name": "e", "replicas": 1}]),
     "rtt_s needs 'central'"),
    (_edge([{"name": "a", "share": 1.0, "rtt_s": {"central": {"mean_s": 0.1}}}], [{"name": "central", "replicas": 1}]),
     "site names must be distinct and not 'central'"),
    ({**_edge([{"name": "a", "share": 1.0, "rtt_s": {"central": {"mean_s": 0.1}}}], [{"name": "e", "replicas": 1}]),
      "autoscaler": {"type": "hpa", "max_replicas": 4, "metrics": [
          {"type": "resource", "name": "gpu_utilization", "target_utilization": 0.5}]}},
     "autoscaler.type = 'hpa': edge sites are fixed fleets"),
])
def test_bad_edge_values_are_one_line_errors(edge, message):
    with pytest.raises(sim.ScenarioError, match=message) as info:
        sim.scenario_from_dict({"workload": {"arrivals": {"process": "poisson", "rate_rps": 5}},
                                "service": {"type": "parametric", "base_s": 0.01}, **edge, "run": {"duration_s": 1}})
    assert "\n" not in str(info.value)
