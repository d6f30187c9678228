"""Replica failures: availability against MTBF / (MTBF + MTTR) over a long seeded run, restarts that are
cold starts, node failures, lost and retried requests, and N+k sizing in the planner."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.experiments.executors import SerialExecutor
from sim.planner.candidates import gpu_candidates
from sim.planner.search import Evaluator, Space, plan
from sim.theory.availability import steady_availability

# Deterministic cold start: provisioning 5 s, weight load 12 s, readiness probe every 5 s from the container
# start, so a replacement takes traffic 5 + ceil(12 / 5) * 5 = 20 s after the failure: MTTR = 20 s.
COLD = {"provision_s": 5, "weight_load_s": 12, "readiness_period_s": 5}
MTTR_S = 20.0


def _scenario(failures: dict, rate_rps: float = 0.05, duration_s: float = 120_000, **extra):
    return sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": rate_rps}},
        "service": {"type": "parametric", "base_s": 0.01}, "fleet": {"replicas": 4},
        "failures": failures, "cold_start": COLD, "run": {"duration_s": duration_s, "seed": 5}, **extra})


@pytest.mark.parametrize("law", [{"distribution": "exponential"},
                                 {"distribution": "weibull", "weibull_shape": 2.0}])
def test_availability_is_mtbf_over_mtbf_plus_mttr(law):
    """4 replicas, MTBF 100 s, MTTR 20 s, no load to speak of, 120,000 s: about 4,000 up/down cycles, so the
    measured share of time up is within ±0.01 of 100/120 (about 7 standard errors), whatever the law."""
    result = sim.run(_scenario({"replica_mtbf_s": 100, **law}))
    assert result.summary["availability"] == pytest.approx(steady_availability(100, MTTR_S), abs=0.01)
    assert result.summary["replica_failures"] == pytest.approx(4 * 120_000 / 120, rel=0.05)


def test_a_restart_is_a_cold_start_in_the_failed_replica_slot():
    replicas = sim.run(_scenario({"replica_mtbf_s": 100}, duration_s=2000)).replicas
    failed = replicas[np.isfinite(replicas["gone_s"]) & (replicas["gone_s"] < 2000)]
    later = replicas.set_index("created_s")
    assert len(failed) > 20
    for gone in failed["gone_s"]:
        replacement = later.loc[gone]  # requested the moment the replica failed
        assert replacement["ready_s"] - gone == pytest.approx(MTTR_S)
    assert (replicas["ready_s"] - replicas["created_s"]).iloc[4:].eq(MTTR_S).all()


def test_a_node_failure_takes_all_its_replicas_down_at_once():
    result = sim.run(_scenario({"node_mtbf_s": 300, "replicas_per_node": 2}, duration_s=5000))
    gone = result.replicas["gone_s"].to_numpy()
    times, counts = np.unique(gone[gone < 5000], return_counts=True)
    assert len(times) == result.summary["node_failures"] > 5
    assert (counts == 2).all()  # both slots of the node, running or still starting
    assert result.summary["replica_failures"] == 0


def test_requests_held_by_a_failed_replica_are_lost_or_retried():
    """4 replicas of 10 ms failing every 20 s (then 30 s) on average, restarted after 20 s: with in_flight lost,
    the requests a replica held end (rejected, failed) the moment it fails; retried, they are served later."""
    lost = sim.run(_scenario({"replica_mtbf_s": 20, "in_flight": "lost"}, rate_rps=200, duration_s=200))
    r = lost.requests
    failed = r[r["failed"]]
    assert len(failed) > 0 and (failed["outcome"] == "rejected").all()
    gone_at = lost.replicas.set_index("replica")["gone_s"]
    np.testing.assert_allclose(failed["end_s"], gone_at.loc[failed["replica"]].to_numpy())
    assert lost.summary["requests_failed"] == int(failed["arrival_s"].lt(200).sum())
    assert lost.batches["failed"].sum() > 0

    retried = sim.run(_scenario({"replica_mtbf_s": 30, "retry": {"max_attempts": 3, "backoff_s": 0.05}},
                                rate_rps=150, duration_s=200))
    r = retried.requests
    again = r[r["attempts"] > 1]
    assert len(again) > 0 and not r["failed"].any() and (r["outcome"] == "served").all()
    assert (again["latency_s"] >= 0.05).all() and (r["attempts"] <= 3).all()
    assert retried.summary["requests_retried"] == len(again)
    assert retried.summary["slo_violation_min"] >= 0


def test_the_retry_budget_caps_retries():
    """No budget beyond budget_min_retries = 0 and share 0: every held request is given up."""
    result = sim.run(_scenario({"replica_mtbf_s": 20, "retry": {"budget_share": 0.0, "budget_min_retries": 0}},
                               rate_rps=200, duration_s=100))
    r = result.requests
    assert (r["attempts"] == 1).all() and r["failed"].sum() > 0


def test_n_plus_k_sizing_holds_the_slo_with_k_replicas_down(tmp_path):
    """λ = 400/s, exponential 10 ms services, random router: each replica is an M/M/1 at λ/n, p99 =
    ln(100)/(μ − λ/n); SLO 180 ms needs n = 6 (5 gives 230 ms). With --spare 1 a fleet is judged with one
    replica down, so the cheapest one keeping the SLO has 7 replicas, priced as 7."""
    scenario = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": 400}},
        "service": {"type": "parametric", "base_s": 0.01, "distribution": "exponential"},
        "fleet": {"replicas": 1, "router": "random"}, "slo": {"latency_s": 0.18, "percentile": 99},
        "cost": {"usd_per_replica_hour": 1.0}, "run": {"duration_s": 60, "warmup_s": 5, "seed": 3}})
    assert min(n for n in range(5, 10) if math.log(100) / (100 - 400 / n) <= 0.18) == 6
    space = Space(gpu_candidates(scenario), [1], [0.0], [6, 7, 8])
    runner = Evaluator(scenario, 3, 3, SerialExecutor(), tmp_path / "ck", progress=False, spare=1)
    result = plan(scenario, space, runner, "grid")
    table = result.table.set_index("fleet.replicas")
    assert int(result.best["fleet.replicas"]) == 7 and int(result.best["spare_replicas"]) == 1
    assert not bool(table.loc[6, "meets_slo"])  # 5 left when one is down
    assert table.loc[7, "cost_per_hour_usd"] == pytest.approx(7.0)


@pytest.mark.parametrize(("failures", "message"), [
    ({"in_flight": "lost"}, "failures: give replica_mtbf_s or node_mtbf_s"),
    ({"replica_mtbf_s": 10, "distribution": "weibull"}, "weibull_shape goes with distribution weibull"),
    ({"replica_mtbf_s": 10, "in_flight": "lost", "retry": {"max_attempts": 2}}, "retry is read only when"),
    ({"replica_mtbf_s": -1}, "failures.replica_mtbf_s = -1"),
    ({"replica_mtbf_s": 10, "retry": {"backoff_multiplier": 0.5}}, "failures.retry.backoff_multiplier = 0.5"),
])
def test_bad_failure_values_are_one_line_errors(failures, message):
    with pytest.raises(sim.ScenarioError, match=message) as info:
        _scenario(failures)
    assert "\n" not in str(info.value)
