"""Offline batch jobs: the makespan against the hand formula, the work queue's balance, spot reclaims, cost,
the planner against the closed form, and one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

import sim
from sim.architectures.offline import simulate_job
from sim.cli import main
from sim.runner import streams
from sim.scenario.keys import updated
from sim.theory.architectures import offline_makespan_s, offline_replicas_needed

COLD = {"provision_s": 5.0, "image_pull_s": 3.0, "weight_load_s": 10.0, "warmup_s": 2.0}  # 20 s, no probe
JOB = {"name": "job", "offline": {"items": 10_000, "deadline_s": 600},
       "service": {"type": "parametric", "base_s": 0.02, "per_item_s": 0.001},
       "batching": {"max_batch_size": 32}, "fleet": {"replicas": 4}, "cold_start": COLD,
       "cost": {"usd_per_replica_hour": 3.6}, "run": {"seed": 1}}


def job(**changes) -> sim.Scenario:
    return updated(sim.scenario_from_dict(JOB), changes) if changes else sim.scenario_from_dict(JOB)


def batch_s(b: int) -> float:
    return 0.02 + 0.001 * b


@pytest.mark.parametrize(("items", "replicas", "b"), [
    (10_000, 4, 32),   # 313 batches, the last one of 16: 79 rounds
    (12_800, 4, 32),   # exactly 100 rounds of full batches
    (999, 7, 10),      # 100 batches over 7 replicas: 15 rounds, the last of 9 items
    (1, 3, 64),        # one item: one round
    (50_000, 16, 128),
])
def test_makespan_of_a_static_fleet_is_the_hand_formula(items, replicas, b):
    """Deterministic batch times S(B) and cold start C: cold start + ceil(N/(K·B)) rounds × S(B), or up to one
    batch less (the last round may hold a partial, quicker batch)."""
    s = job(**{"offline.items": items, "fleet.replicas": replicas, "batching.max_batch_size": b})
    summary = sim.run(s).summary
    hand = offline_makespan_s(items, replicas, b, batch_s(b), cold_start_s=20.0)
    assert hand - batch_s(b) - 1e-9 <= summary["makespan_s"] <= hand + 1e-9
    if items % (replicas * b) == 0:
        assert summary["makespan_s"] == pytest.approx(hand, abs=1e-9)
    assert summary["items_done"] == items and summary["first_ready_s"] == pytest.approx(20.0)


def test_cost_and_gpu_hours_by_hand():
    """12,800 items on 4 replicas at 32: every replica is released with the last round at 20 + 100 × 0.052 s."""
    summary = sim.run(job(**{"offline.items": 12_800})).summary
    makespan = 20.0 + 100 * 0.052
    assert summary["gpu_hours"] == pytest.approx(4 * makespan / 3600)
    assert summary["cost_usd"] == pytest.approx(4 * makespan / 3600 * 3.6)
    assert summary["utilization"] == pytest.approx(100 * 0.052 / makespan)
    assert summary["deadline_met"] and summary["deadline_slack_s"] == pytest.approx(600 - makespan)
    late = sim.run(job(**{"offline.items": 12_800, "offline.deadline_s": 25.0})).summary
    assert not late["deadline_met"] and late["deadline_slack_s"] < 0


@pytest.mark.parametrize("service", [
    {"type": "parametric", "base_s": 0.02, "per_item_s": 0.001, "distribution": "lognormal", "cv": 0.5},
    {"type": "profile", "profile": "cpu-mlp-fp32"},
])
def test_the_work_queue_keeps_replicas_within_one_batch_of_each_other(service):
    """With variable batch times the makespan is no longer the formula, but one work queue still balances the
    fleet: after the cold start it lasts the busy time over K, plus at most the longest batch."""
    s = updated(job(**{"offline.items": 40_000}), {"service": service, "cold_start": {**COLD, "warmup_s": 2.0}})
    run = simulate_job(s, streams(s.run.seed, 0))
    busy = run.batches["end_s"] - run.batches["start_s"]
    after_cold = run.summary["makespan_s"] - run.summary["first_ready_s"]
    assert busy.sum() / 4 - 1e-9 <= after_cold <= busy.sum() / 4 + busy.max() + 1e-9
    assert (run.replicas["ready_s"] == run.summary["first_ready_s"]).all()


def test_items_table_and_timeseries():
    s = job(**{"offline.items": 1000})
    result = sim.run(s)
    items = result.requests
    assert len(items) == 1000 and (items["outcome"] == "served").all() and (items["arrival_s"] == 0).all()
    assert (items.groupby(["replica", "start_s"]).size() <= 32).all()
    ts = result.timeseries
    assert ts["items_done"].iloc[-1] == 1000 and ts["items_done"].is_monotonic_increasing
    assert ts["billed_replicas"].max() == 4 and ts["billed_replicas"].iloc[-1] == 0


def test_spot_reclaims_redo_lost_batches_and_cost_less():
    """Reclaims every ~2 minutes per replica: lost batches are done again, every item exactly once; cold starts
    are the same draws as on demand (the reclaims have their own stream)."""
    spot = job(**{"offline.items": 200_000, "offline.capacity_type": "spot", "offline.spot_interruptions_per_hour": 30,
                  "offline.spot_discount": 0.7})
    result = sim.run(spot)
    s, batches = result.summary, result.batches
    assert s["interruptions"] > 0 and s["items_redone"] == batches.loc[batches["lost"], "size"].sum() > 0
    assert s["items_done"] == 200_000 and (result.requests["outcome"] == "served").all()
    assert s["replicas_launched"] == 4 + s["interruptions"] - _reclaimed_without_replacement(result)
    assert s["price_usd_per_replica_hour"] == pytest.approx(3.6 * 0.3)
    assert s["cost_usd"] == pytest.approx(s["gpu_hours"] * 3.6 * 0.3)
    on_demand = sim.run(updated(spot, {"offline.capacity_type": "on_demand"})).summary
    assert on_demand["interruptions"] == 0 and on_demand["first_ready_s"] == s["first_ready_s"]
    assert on_demand["makespan_s"] < s["makespan_s"]


def _reclaimed_without_replacement(result) -> int:
    """Reclaims after the last batch was taken need no replacement."""
    reclaimed = result.replicas[result.replicas["reclaimed"]]
    last_start = result.batches["start_s"].max()
    return int((reclaimed["gone_s"] > last_start).sum())


def test_dataset_bytes_give_the_items():
    s = job(**{"offline": {"dataset_bytes": 1.0e6, "item_bytes": 300, "deadline_s": 600}})
    assert s.offline.job_items == 3334
    assert sim.run(s).summary["items_total"] == 3334


@pytest.mark.parametrize(("changes", "message"), [
    ({"workload": {"arrivals": {"process": "poisson", "rate_rps": 5}}}, "workload: an offline job has no arrivals"),
    ({"offline": {"items": 10, "dataset_bytes": 5.0, "deadline_s": 9}}, "offline: give items or dataset_bytes"),
    ({"offline": {"deadline_s": 9}}, "offline: give items, or dataset_bytes with item_bytes"),
    ({"offline": {"items": 0, "deadline_s": 9}}, "offline.items = 0: must be greater than or equal to 1"),
    ({"offline": {"items": 9, "deadline_s": 9, "capacity_type": "preemptible"}},
     "offline.capacity_type = 'preemptible': must be 'on_demand' or 'spot'"),
    ({"offline": {"items": 9, "deadline_s": 9, "spot_discount": 1.0}}, "offline.spot_discount = 1.0: must be less than 1"),
    ({"run": {"duration_s": 60}}, "run.duration_s = 60.0: an offline job runs until its last item is done"),
    ({"batching": {"max_batch_size": 8, "max_queue_delay_s": 0.01}}, "batching: an offline job reads only"),
    ({"autoscaler": {"type": "hpa", "max_replicas": 4, "metrics": [
        {"type": "resource", "name": "gpu_utilization", "target_utilization": 0.5}]}},
     "autoscaler.type = 'hpa': an offline job runs a fixed fleet"),
])
def test_bad_offline_scenarios_are_one_line(changes, message):
    with pytest.raises(sim.ScenarioError) as err:
        sim.scenario_from_dict({**JOB, **changes})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_too_many_batches_and_too_many_item_rows_are_refused():
    with pytest.raises(sim.ScenarioError, match=r"batching.max_batch_size = 1 are 3,000,000 batches; at most"):
        sim.run(job(**{"offline.items": 3_000_000, "batching.max_batch_size": 1}))
    with pytest.raises(sim.ScenarioError, match=r"offline: 5,000 items, one requests row each.*run.max_requests = 100"):
        sim.run(job(**{"offline.items": 5_000, "run.max_requests": 100}))


def test_simulate_writes_the_job_and_the_doc_covers_its_keys(capsys, tmp_path):
    example = Path(__file__).parents[1] / "examples" / "architectures" / "offline_spot.yaml"
    out = tmp_path / "run"
    code = main(["simulate", str(example), "--set", "offline.dataset_bytes=4.0e7", "--replications", "2",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "makespan" in printed and "deadline 3,600 s" in printed and "cost of the job" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items_total"] == 20_000 and summary["deadline_met"] is True
    assert 0 < summary["makespan_s_ci95_low"] <= summary["makespan_s"] <= summary["makespan_s_ci95_high"]
    again = sim.load_scenario(out / "scenario.yaml")  # the scenario as run is an offline scenario again
    assert again.offline.job_items == 20_000 and again.workload is None
    doc = (Path(__file__).parents[1] / "docs" / "results.md").read_text()
    documented = set(pd.Series(doc.splitlines()).str.extract(r"^\| `([a-z0-9_{}P]+)` \|")[0].dropna())
    keys = {k for k in summary if not k.endswith(("_ci95_low", "_ci95_high")) and k != "scenario"}
    assert keys <= documented, keys - documented
    for name in ("requests", "batches", "timeseries", "replicas"):
        columns = set(pd.read_parquet(out / f"{name}.parquet").columns)
        assert columns <= documented, columns - documented


def test_plan_offline_finds_the_closed_form_fleet(capsys, tmp_path, write_scenario):
    """Deterministic service on demand: the fewest replicas meeting the deadline are the closed form's."""
    path = write_scenario({**JOB, "offline": {"items": 200_000, "deadline_s": 60}})
    out = tmp_path / "plan"
    code = main(["plan-offline", str(path), "--batch-sizes", "32,64", "--capacity-types", "on_demand",
                 "--workers", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    fleets = pd.read_parquet(out / "fleets.parquet")
    for b in (32, 64):
        row = fleets[fleets["batching.max_batch_size"] == b].iloc[0]
        assert row["fleet.replicas"] == offline_replicas_needed(200_000, b, batch_s(b), 60.0, cold_start_s=20.0) > 1
        assert row["meets_deadline"]
    best = fleets.iloc[0]
    assert best["cost_usd"] == fleets["cost_usd"].min()
    recommended = sim.load_scenario(out / "recommended.yaml")
    assert recommended.fleet.replicas == best["fleet.replicas"]
    assert "recommended" in capsys.readouterr().out
    assert len(pd.read_parquet(out / "candidates.parquet")) >= 2 * len(fleets)  # each bracketed from both sides


def test_plan_refuses_architectures_and_plan_offline_refuses_online(capsys, write_scenario):
    assert main(["plan", str(write_scenario(JOB))]) == 2
    assert "plan-offline" in capsys.readouterr().err
    online = {"workload": {"arrivals": {"process": "poisson", "rate_rps": 5}},
              "service": {"type": "parametric", "base_s": 0.01}, "run": {"duration_s": 5}}
    assert main(["plan-offline", str(write_scenario(online, "online.yaml"))]) == 2
    err = capsys.readouterr().err
    assert "plans an offline job" in err and err.count("\n") == 1
    assert math.isfinite(offline_makespan_s(1, 1, 1, 1.0))
