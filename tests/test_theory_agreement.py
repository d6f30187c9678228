"""The simulator against queueing theory: long seeded runs, replications, warm-up excluded.

Each test states its tolerance, runs enough requests that the estimator's standard error (taken
from the spread of the replication means) is well inside it, prints the achieved relative error
and its standard error (``pytest -s`` shows them), and asserts on the error.

Sizing: for M/M/1 the relative variance of a mean sojourn over n customers is roughly
2(1 + ρ)/(ρ(1 − ρ)²)/n (Whitt, "Planning queueing simulations", 1989), so a 1% standard error
needs ~0.1M customers at ρ = 0.5, ~1.2M at ρ = 0.8 and ~4.5M at ρ = 0.9.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim import scenario_from_dict
from sim.runner import run_once
from sim.theory import queueing as theory

MU = 1000.0  # service rate of one server, requests/s (mean service 1 ms)


def scenario(rate_rps: float, *, requests: int, warmup_s: float, service: dict | None = None,
             batching: dict | None = None, fleet: dict | None = None, run: dict | None = None):
    return scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": rate_rps}},
        "service": service or {"type": "parametric", "base_s": 1 / MU, "distribution": "exponential"},
        "batching": batching or {},
        "fleet": fleet or {},
        "run": {"requests": requests, "warmup_s": warmup_s, **(run or {})},
    })


def replicated(sc, replications: int, statistic, seed: int = 2024) -> tuple[float, float]:
    """Mean of ``statistic(requests, summary)`` over replications and its standard error."""
    values = []
    for r in range(replications):
        requests, _, _, _, summary = run_once(sc, seed, r)
        values.append(statistic(requests, summary))
    values = np.asarray(values)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def measured(requests, warmup_s: float):
    """Served requests that arrived after the warm-up."""
    keep = (requests["arrival_s"].to_numpy() >= warmup_s) & (requests["outcome"].to_numpy() == "served")
    return requests[keep]


def report(label: str, simulated: float, expected: float, se: float, tolerance: float) -> float:
    error = (simulated - expected) / expected
    print(f"\n{label}: simulated {simulated:.6g}, theory {expected:.6g}, error {error:+.2%} "
          f"(standard error {se / expected:.2%}, tolerance {tolerance:.0%})")
    return error


@pytest.mark.parametrize(("rho", "requests", "replications"), [
    (0.5, 100_000, 5),
    pytest.param(0.8, 300_000, 10, marks=pytest.mark.slow),
    pytest.param(0.9, 500_000, 12, marks=pytest.mark.slow),
])
def test_mm1_mean_sojourn(rho, requests, replications):
    """M/M/1: mean sojourn within 3% of 1/(μ − λ)."""
    lam, warmup = rho * MU, 5.0
    sc = scenario(lam, requests=requests, warmup_s=warmup)
    sim_w, se = replicated(sc, replications, lambda req, s: s["latency_mean_s"])
    error = report(f"M/M/1 rho={rho} mean sojourn, {requests * replications:,} requests", sim_w,
                   theory.mm1_mean_sojourn_s(lam, MU), se, 0.03)
    assert abs(error) < 0.03


@pytest.mark.slow
def test_mmc_mean_wait_matches_erlang_c():
    """M/M/4 at ρ = 0.8: mean wait within 5% of Erlang C.

    capsim's fleet gives every replica its own queue (the router picks a replica on arrival), which
    is *not* M/M/c. One replica with ``instances_per_replica: 4`` and ``max_batch_size: 1`` is: a
    single FIFO queue feeding 4 concurrent execution slots, each taking one request at a time.
    """
    c, rho, warmup, requests, replications = 4, 0.8, 5.0, 400_000, 10
    lam = rho * c * MU
    sc = scenario(lam, requests=requests, warmup_s=warmup, batching={"max_batch_size": 1},
                  fleet={"replicas": 1, "instances_per_replica": c})
    sim_wq, se = replicated(sc, replications, lambda req, s: measured(req, warmup)["queue_s"].mean())
    error = report(f"M/M/4 rho=0.8 mean wait, {requests * replications:,} requests", sim_wq,
                   theory.mmc_mean_wait_s(lam, MU, c), se, 0.05)
    assert abs(error) < 0.05


@pytest.mark.slow
def test_md1_mean_wait_matches_pollaczek_khinchine():
    """M/D/1 at ρ = 0.8: mean wait within 3% of ρS/(2(1 − ρ))."""
    rho, warmup, requests, replications = 0.8, 5.0, 300_000, 8
    lam = rho * MU
    sc = scenario(lam, requests=requests, warmup_s=warmup,
                  service={"type": "parametric", "base_s": 1 / MU, "distribution": "deterministic"})
    sim_wq, se = replicated(sc, replications, lambda req, s: measured(req, warmup)["queue_s"].mean())
    error = report(f"M/D/1 rho=0.8 mean wait, {requests * replications:,} requests", sim_wq,
                   theory.md1_mean_wait_s(lam, 1 / MU), se, 0.03)
    assert abs(error) < 0.03


def test_little_law_on_a_batching_fleet():
    """L = λW within 2% with dynamic batching (max 8, 2 ms delay) on 2 replicas.

    L is the time average of the number in system, computed two ways: exactly from the request
    records (theory.little_law) and from the engine's sampled time series (queue_len + in_service);
    λW is the arrival rate in the window times the mean sojourn of the window's arrivals.
    """
    warmup, duration = 5.0, 300.0
    sc = scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": 1500}},
        "service": {"type": "parametric", "base_s": 0.002, "per_item_s": 0.0005, "distribution": "lognormal",
                    "cv": 0.5},
        "batching": {"max_batch_size": 8, "max_queue_delay_s": 0.002},
        "fleet": {"replicas": 2, "router": "least_outstanding"},
        "run": {"duration_s": duration, "warmup_s": warmup, "sample_interval_s": 0.003},
    })
    requests, _, series, _, summary = run_once(sc, 11, 0)
    assert summary["requests_served"] == summary["requests_total"] and not summary["unstable"]
    exact = theory.little_law(requests["arrival_s"].to_numpy(), requests["end_s"].to_numpy(), warmup, duration)
    window = (series["time_s"] >= warmup) & (series["time_s"] < duration)
    sampled_l = float((series["queue_len"] + series["in_service"])[window].mean())
    sampled_error = (sampled_l - exact["lam_W"]) / exact["lam_W"]
    print(f"\nLittle's law, batching fleet ({exact['lam'] * (duration - warmup):,.0f} requests): L from records "
          f"{exact['L']:.5f}, L sampled {sampled_l:.5f}, lambda*W {exact['lam_W']:.5f}; errors "
          f"{exact['rel_error']:+.3%} (records), {sampled_error:+.3%} (time series)")
    assert abs(exact["rel_error"]) < 0.02
    assert abs(sampled_error) < 0.02


def test_overload_is_flagged_unstable():
    """λ = 1.25 × capacity: the run ends, is flagged unstable, withholds percentiles, backlog grows."""
    sc = scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": 2500}},
        "service": {"type": "parametric", "base_s": 0.002, "per_item_s": 0.0005, "distribution": "exponential"},
        "batching": {"max_batch_size": 4, "max_queue_delay_s": 0.001},
        "run": {"duration_s": 20.0, "warmup_s": 2.0},
    })
    capacity = theory.batching_capacity_rps(lambda b: 0.002 + 0.0005 * b, 4)
    assert 1.25 * capacity <= 2500
    _, _, _, _, s = run_once(sc, 3, 0)
    assert s["capacity_rps"] == pytest.approx(capacity)
    assert s["unstable"] is True
    for key in ("latency_mean_s", "latency_p50_s", "latency_p99_s", "latency_p999_s"):
        assert math.isnan(s[key]), key
    assert s["slo_met"] is False
    assert s["backlog_growth_rps"] > 0
    # The backlog grows at about λ − capacity.
    assert s["backlog_growth_rps"] == pytest.approx(2500 - capacity, rel=0.15)
    assert math.isfinite(s["latency_p99_observed_s"])


def test_bounded_queue_under_overload_is_not_unstable():
    """λ = 2 × capacity onto a queue of at most 10: half is rejected, the rest sees bounded latency."""
    sc = scenario(2000.0, requests=40_000, warmup_s=2.0, batching={"max_queue_size": 10})
    _, _, _, _, s = run_once(sc, 3, 0)
    assert s["requests_rejected"] > 0.4 * s["requests_total"]
    assert s["backlog_at_end"] <= 11 and abs(s["backlog_growth_rps"]) < 1.0  # bounded: it is stable
    assert not s["unstable"]
    assert math.isfinite(s["latency_p99_s"])
