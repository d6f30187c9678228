"""Autoscaling and cold starts end to end: the step response, cost against the timeline, the spike
comparison table, scale from zero, Ray Serve delays and real HPA manifests."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import sim
from sim.cli import main as cli
from sim.errors import ScenarioError
from sim.scenario.keys import updated

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def step_scenario(**over):
    """100 -> 400 req/s at t=92; 4 replicas of 100 req/s (10 ms deterministic); HPA on busy share 0.5,
    15 s sync, 15 s metric window; 60 s cold start (weights), readiness probe every 10 s."""
    d = {
        "name": "step",
        "workload": {"arrivals": {"process": "steps", "steps": [{"at_s": 0, "rate_rps": 100},
                                                                   {"at_s": 92, "rate_rps": 400}]}},
        "service": {"type": "parametric", "base_s": 0.01, "distribution": "deterministic"},
        "fleet": {"replicas": 4, "router": "least_outstanding"},
        "autoscaler": {"type": "hpa", "min_replicas": 4, "max_replicas": 20,
                       "metrics": [{"type": "resource", "name": "gpu_utilization", "target_utilization": 0.5}]},
        "cold_start": {"provision_s": 0, "image_pull_s": 0, "weight_load_s": 60, "readiness_period_s": 10},
        "cost": {"usd_per_replica_hour": 3.6},
        "run": {"duration_s": 360, "seed": 3, "sample_interval_s": 1},
    }
    d.update(over)
    return sim.scenario_from_dict(d)


@pytest.fixture(scope="module")
def step_run():
    return sim.run(step_scenario())


def test_step_first_request_at_first_sync_after_step(step_run):
    reps = step_run.replicas
    new = reps[reps["created_s"] > 0]
    assert len(new) >= 1
    first = new["created_s"].min()
    # syncs at 15, 30, ...; the step at 92 is first seen by the sync at 105
    assert first == pytest.approx(105.0)


def test_step_new_replica_ready_after_cold_start_and_probe(step_run):
    reps = step_run.replicas
    new = reps[reps["created_s"] > 0]
    delay = (new["ready_s"] - new["created_s"]).to_numpy()
    assert np.all(delay >= 60.0 - 1e-9) and np.all(delay <= 70.0 + 1e-9)  # 60 s load + ≤ 1 probe period


def test_step_ramp_p99_exceeds_steady_state(step_run):
    req = step_run.requests
    served = req[req["outcome"] == "served"]
    first_ready = step_run.replicas.query("created_s > 0")["ready_s"].min()
    steady = served[(served["arrival_s"] > 20) & (served["arrival_s"] < 92)]["latency_s"]
    ramp = served[(served["arrival_s"] >= 92) & (served["arrival_s"] < first_ready)]["latency_s"]
    assert np.percentile(ramp, 99) > 5 * np.percentile(steady, 99)


def test_step_unready_pods_damp_second_scale_up(step_run):
    """While the first new replicas load, the HPA does not keep adding: the unready pods count as 0%."""
    ts = step_run.timeseries
    loading = ts[(ts["time_s"] > 106) & (ts["time_s"] < 160)]
    assert loading["desired_replicas"].nunique() == 1


def test_cost_is_sum_of_lifetimes_and_matches_timeline(step_run):
    reps = step_run.replicas
    horizon = 360.0
    life_s = (np.minimum(reps["gone_s"], horizon) - reps["created_s"]).clip(lower=0).sum()
    expected = life_s / 3600 * 3.6
    assert step_run.summary["cost_usd"] == pytest.approx(expected, rel=1e-12)
    ts = step_run.timeseries
    ts = ts[ts["time_s"] < horizon]
    integral = float((ts["cost_rate_usd_per_h"].to_numpy() * 1.0).sum() / 3600)  # 1 s samples
    changes = int((np.diff(ts["billed_replicas"].to_numpy()) != 0).sum())
    assert abs(integral - expected) <= (changes + 1) * 20 * 3.6 / 3600  # ≤ one sample per change


def test_spike_comparison_table():
    """Headroom (minReplicas) lowers the spike's p99; scale-up stabilisation raises it."""
    from sim.cli.compare import compare, variants

    path = str(EXAMPLES / "autoscaling" / "spike_cold_start.yaml")
    pairs = variants([path], ["headroom:autoscaler.min_replicas=8",
                              "up-stabilization:autoscaler.behavior.scale_up.stabilization_window_s=60",
                              "both:autoscaler.min_replicas=8,autoscaler.behavior.scale_up.stabilization_window_s=60"])
    pairs = [(label, updated(sc, {"run.duration_s": 420})) for label, sc in pairs]
    results = dict(compare(pairs, seed=5))
    p99 = {k: s["latency_p99_observed_s"] for k, s in results.items()}
    cost = {k: s["cost_per_hour_usd"] for k, s in results.items()}
    assert p99["headroom"] < p99["spike-40s-cold-start"]
    assert p99["up-stabilization"] >= p99["spike-40s-cold-start"]
    assert cost["headroom"] > cost["spike-40s-cold-start"]


def test_compare_cli_prints_table(capsys):
    path = str(EXAMPLES / "autoscaling" / "scale_from_zero.yaml")
    assert cli(["compare", path, "--vary", "warm:autoscaler.min_replicas=1,autoscaler.initial_replicas=1"]) == 0
    out = capsys.readouterr().out
    assert "scale-from-zero" in out and "warm" in out and "p99" in out


def test_scale_from_zero_holds_then_serves_then_returns_to_zero():
    r = sim.run(sim.load_scenario(EXAMPLES / "autoscaling" / "scale_from_zero.yaml"))
    req, ts = r.requests, r.timeseries
    assert (req["outcome"] == "served").all()
    first = req.sort_values("arrival_s").iloc[0]
    assert first["latency_s"] > 10  # waited at the activator through a 15 s cold start
    assert ts["held"].max() > 0
    assert ts[ts["time_s"] < 50]["billed_replicas"].max() == 0  # nothing runs before traffic
    assert ts["billed_replicas"].iloc[-1] == 0  # idle again -> back to zero


def test_ray_serve_upscale_waits_for_delay():
    d = step_scenario().model_dump(exclude={"base_dir"})
    d["autoscaler"] = {"type": "ray_serve", "min_replicas": 4, "max_replicas": 20, "target_ongoing_requests": 1,
                       "upscale_delay_s": 30, "look_back_period_s": 10}
    r = sim.run(sim.scenario_from_dict(d))
    new = r.replicas[r.replicas["created_s"] > 0]
    assert new["created_s"].min() >= 92 + 30 - 1e-6


def test_scenario_round_trip_keeps_autoscaler():
    sc = sim.load_scenario(EXAMPLES / "autoscaling" / "spike_cold_start.yaml")
    again = sim.scenario_from_dict(__import__("yaml").safe_load(sim.dump_scenario(sc)), base_dir=sc.base_dir)
    assert again == sc


# ---------------------------------------------------------------- manifests
def test_manifest_reads_hpa_and_deployment():
    sc = sim.load_scenario(EXAMPLES / "autoscaling" / "from_manifest.yaml")
    a = sc.autoscaler
    assert (a.type, a.min_replicas, a.max_replicas, a.initial_replicas) == ("hpa", 2, 10, 2)
    assert a.metrics[0].name == "gpu_utilization" and a.metrics[0].target_utilization == pytest.approx(0.7)
    assert (a.metrics[1].type, a.metrics[1].name, a.metrics[1].target_average_value) == ("pods", "in_flight", 8)
    assert a.behavior.scale_down.stabilization_window_s == 120
    assert a.behavior.scale_down.policies[0].value == 50
    assert sc.cold_start.readiness_period_s == 5


BAD = {
    "apiVersion": ("autoscaling/v1", "apiVersion = 'autoscaling/v1'"),
    "scaleTargetRef": (None, "spec.scaleTargetRef"),
    "metric type": ("Bogus", "spec.metrics[0].type = 'Bogus'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_manifest_clear_error(tmp_path, case, capsys):
    import yaml

    hpa = yaml.safe_load((EXAMPLES / "k8s" / "hpa.yaml").read_text())
    value, expected = BAD[case]
    if case == "apiVersion":
        hpa["apiVersion"] = value
    elif case == "scaleTargetRef":
        del hpa["spec"]["scaleTargetRef"]
    else:
        hpa["spec"]["metrics"][0]["type"] = value
    (tmp_path / "hpa.yaml").write_text(yaml.safe_dump(hpa))
    scen = yaml.safe_load((EXAMPLES / "autoscaling" / "from_manifest.yaml").read_text())
    scen["autoscaler"] = {"from_manifest": "hpa.yaml"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scen))
    with pytest.raises(ScenarioError, match="hpa.yaml"):
        sim.load_scenario(tmp_path / "s.yaml")
    assert cli(["simulate", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_unknown_autoscaler_type_did_you_mean(tmp_path, capsys):
    import yaml

    scen = yaml.safe_load((EXAMPLES / "autoscaling" / "spike_cold_start.yaml").read_text())
    scen["autoscaler"]["type"] = "hpaa"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scen))
    assert cli(["simulate", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err
    assert "autoscaler.type = 'hpaa'" in err and "did you mean 'hpa'" in err


def test_plot_writes_png(tmp_path):
    sc = updated(step_scenario(), {"run.duration_s": 120})
    from sim.results.output import write_run

    write_run(sim.run(sc), tmp_path)
    assert cli(["plot", str(tmp_path)]) == 0
    png = tmp_path / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert math.isfinite(sc.cost.usd_per_replica_hour)


def test_kpa_keeps_a_replica_while_sparse_short_requests_arrive():
    """2 requests/s of 10 ms each: at a 1 s scrape most samples catch none in flight, so the stable
    window's concurrency can read 0 while traffic flows. Scale to zero waits for a stable window without
    a request routed or held, then the grace (docs/autoscaling.md): the replica outlives the traffic
    (until 60 s) by about 30 + 10 s, and no request waits for a cold start."""
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "steps", "steps": [{"at_s": 0, "rate_rps": 2}, {"at_s": 60, "rate_rps": 0}]}},
        "service": {"type": "parametric", "base_s": 0.01},
        "autoscaler": {"type": "kpa", "min_replicas": 0, "max_replicas": 2, "initial_replicas": 1,
                       "stable_window_s": 30, "scale_to_zero_grace_s": 10},
        "run": {"duration_s": 150, "seed": 2, "sample_interval_s": 1}})
    r = sim.run(sc)
    first = r.replicas.iloc[0]
    assert len(r.replicas) == 1 and 90 <= first["gone_s"] <= 110
    assert r.requests["latency_s"].max() < 0.1
