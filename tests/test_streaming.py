"""Streaming inference: consumer lag against (λ − μ)⁺, checkpoints, backpressure by hand, KEDA's replica
formula, the consumers' bounds under KEDA, records and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import sim
from sim.cli import main
from sim.scaling.keda import KedaController, kafka_lag_metric, keda_desired_replicas
from sim.scenario.keys import updated
from sim.theory.architectures import lag_growth_events_per_s

EXAMPLES = Path(__file__).parents[1] / "examples" / "architectures"
# One consumer, full batches of 16 in 0.032 s: μ = 500 events/s exactly (deterministic service).
STREAM = {"name": "stream", "workload": {"arrivals": {"process": "poisson", "rate_rps": 1000}},
          "service": {"type": "parametric", "base_s": 0.02, "per_item_s": 0.00075},
          "batching": {"max_batch_size": 16}, "fleet": {"replicas": 1},
          "streaming": {"partitions": 4, "commit_interval_s": 0},
          "run": {"duration_s": 300, "seed": 3, "drain_s": 0, "sample_interval_s": 1}}


def stream(**changes) -> sim.Scenario:
    return updated(sim.scenario_from_dict(STREAM), changes)


def test_lag_stays_bounded_with_ample_capacity():
    """λ = 400/s against μ = 4 × 500/s, unbounded partitions: the lag does not grow over the run."""
    s = sim.run(stream(**{"workload.arrivals.rate_rps": 400, "fleet.replicas": 4, "run.duration_s": 120,
                          "run.drain_s": None})).summary
    assert not s["unstable"] and s["events_dropped"] == 0
    assert abs(s["lag_growth_events_per_s"]) < 0.01 * 400
    assert s["lag_events_max"] < 100  # a few batches' worth, at most
    assert s["throughput_rps"] == pytest.approx(400, rel=0.03)


def test_lag_grows_at_rate_minus_capacity():
    """λ = 1000/s into μ = 500/s: the lag grows at λ − μ = 500 events/s (within 3% over 300 s; the Poisson
    count's own noise over the fitted 150 s is about 0.6%)."""
    s = sim.run(stream()).summary
    expected = lag_growth_events_per_s(1000, 500)
    assert s["capacity_rps"] == pytest.approx(500)
    assert s["lag_growth_events_per_s"] == pytest.approx(expected, rel=0.03)
    assert s["throughput_rps"] == pytest.approx(500, rel=0.005)
    assert s["unstable"] and s["lag_events_end"] == pytest.approx(500 * 300, rel=0.03)


def test_checkpoints_take_their_share_of_capacity():
    """Two consumers (μ = 1000/s) pausing 2.5 s every 4 s keep 1 − 2.5/4 of it, 375/s, in the long run; over the
    300 s window, whose first 4 s have no pause, they work 300 − 74 × 2.5 s. The lag grows at about 625/s."""
    s = sim.run(stream(**{"fleet.replicas": 2, "streaming.checkpoint_interval_s": 4.0,
                          "streaming.checkpoint_pause_s": 2.5})).summary
    assert s["capacity_rps"] == pytest.approx(375)
    assert s["throughput_rps"] == pytest.approx(1000 * (300 - 74 * 2.5) / 300, rel=0.01)
    assert s["lag_growth_events_per_s"] == pytest.approx(625, rel=0.03)
    assert s["checkpoints"] == 75 and s["checkpoint_pause_s"] == pytest.approx(2 * 75 * 2.5, rel=0.02)


def test_a_blocking_producer_stalls_while_it_is_behind():
    """1000/s for 100 s then 200/s, μ = 500/s, 4 partitions of 50: the producer falls behind by 500/s, catches
    up at 300/s, so it is blocked from when the partitions fill (0.4 s) until 100 + 100·500/300 s."""
    arrivals = {"process": "steps", "steps": [{"at_s": 0, "rate_rps": 1000}, {"at_s": 100, "rate_rps": 200}]}
    s = sim.run(stream(**{"workload.arrivals": arrivals, "streaming.partition_capacity_events": 50,
                          "streaming.backpressure": "block", "run.drain_s": 60})).summary
    caught_up = 100 + 100 * 500 / 300
    assert s["producer_stall_s"] == pytest.approx(caught_up - 200 / 500, rel=0.02)
    assert s["events_dropped"] == 0 and s["lag_events_max"] <= 200 + 16  # the partitions and a batch in flight
    assert s["requests_served"] == s["requests_total"]


def test_a_dropping_producer_loses_the_excess():
    """1000/s into μ = 500/s for 100 s: all but the 4 × 50 buffered events of the excess are dropped."""
    s = sim.run(stream(**{"streaming.partition_capacity_events": 50, "streaming.backpressure": "drop",
                          "run.duration_s": 100, "run.drain_s": 60})).summary
    assert s["events_dropped"] == pytest.approx(500 * 100 - 200, rel=0.02)
    assert s["requests_rejected"] == s["events_dropped"] and s["producer_stall_s"] == 0
    assert s["lag_events_max"] <= 200 + 16 and s["shed_share"] == pytest.approx(0.5, rel=0.03)


def test_every_event_has_one_outcome_and_batches_respect_partitions():
    result = sim.run(stream(**{"fleet.replicas": 3, "run.duration_s": 20, "run.drain_s": 30,
                               "streaming.partition_capacity_events": 20, "streaming.backpressure": "drop"}))
    events = result.requests
    assert events["outcome"].isin(["served", "rejected"]).all()
    assert (events.loc[events["outcome"] == "rejected", "replica"] == -1).all()
    served = events[events["outcome"] == "served"]
    assert (served["batch_size"] <= 16).all() and (served["end_s"] > served["start_s"]).all()
    assert (result.batches["size"] <= 16).all()
    ts = result.timeseries
    assert (ts["buffered_events"] <= 4 * 20).all() and ts["events_dropped"].is_monotonic_increasing


# ---------------------------------------------------------------- KEDA
def test_keda_metric_and_replicas_by_hand():
    """Lags 40, 25, 0, 15 with lagThreshold 10: 80 capped at 4 partitions × 10 → ⌈40/10⌉ = 4 replicas."""
    lags = [40, 25, 0, 15]
    assert kafka_lag_metric(lags, 10, partitions=4) == (40, True)
    assert kafka_lag_metric(lags, 10, partitions=4, allow_idle_consumers=True) == (80, True)
    assert kafka_lag_metric(lags, 10, partitions=4, limit_to_partitions_with_lag=True) == (30, True)
    assert kafka_lag_metric(lags, 10, partitions=None) == (80, True)  # a shared queue: no partition cap
    assert kafka_lag_metric([0, 0, 3, 0], 10, partitions=4, activation_lag_threshold=3) == (3, False)
    assert kafka_lag_metric([44, 0, 0, 0], 10, partitions=4) == (44, True)  # 44 // 10 = 4, not above 4: no cap
    assert keda_desired_replicas(40, 10, 0, 100) == 4
    assert keda_desired_replicas(0, 10, 0, 100) == 1 and keda_desired_replicas(900, 10, 0, 16) == 16


def _fleet(desired: int) -> SimpleNamespace:
    return SimpleNamespace(desired=desired, live=lambda: [SimpleNamespace(state="ready")] * desired)


def test_keda_controller_feeds_the_hpa_and_scales_from_and_to_zero():
    spec = sim.scenario_from_dict({**STREAM, "autoscaler": {"type": "keda", "lag_threshold": 10,
                                                            "cooldown_period_s": 60}}).autoscaler
    lags = [40, 25, 0, 15]
    keda = KedaController(spec, lambda: lags, partitions=4)
    assert keda.decide(1.0, None, _fleet(0)) == 1  # the first poll sees lag: from zero to one
    assert keda.decide(15.0, None, _fleet(2)) == 4  # the HPA's first sync: ⌈min(80, 40)/10⌉
    lags = [0, 0, 0, 0]
    keda = KedaController(spec, lambda: lags, partitions=4)
    # KEDA leaves 3 (30 s into its cooldown); the HPA, with no history to stabilise on, goes to its minimum, 1.
    assert keda.decide(30.0, None, _fleet(3)) == 1
    assert keda.decide(60.0, None, _fleet(1)) == 0  # KEDA's poll at 60 s: no lag for the whole cooldown


def test_keda_scales_consumers_up_to_the_partitions_and_back_to_zero():
    arrivals = {"process": "steps", "steps": [{"at_s": 0, "rate_rps": 100}, {"at_s": 20, "rate_rps": 2000},
                                             {"at_s": 80, "rate_rps": 0}]}
    s = stream(**{"workload.arrivals": arrivals, "run.duration_s": 300, "run.drain_s": 0,
                  "batching.max_batch_size": 32, "service.base_s": 0.01, "service.per_item_s": 0.0005,
                  "autoscaler": {"type": "keda", "min_replicas": 0, "max_replicas": 10, "lag_threshold": 100,
                                 "polling_interval_s": 10, "cooldown_period_s": 60, "sync_period_s": 5},
                  "cold_start": {"provision_s": 2, "weight_load_s": 3, "readiness_period_s": 1}})
    result = sim.run(s)
    ts = result.timeseries
    assert ts["ready_replicas"].max() == 4 == result.summary["consumers_max"]  # never beyond the 4 partitions
    assert ts["desired_replicas"].max() == 4
    assert ts["desired_replicas"].iloc[0] == 0 and ts["billed_replicas"].iloc[-1] == 0  # from and back to zero
    assert result.summary["requests_served"] == result.summary["requests_total"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"autoscaler": {"type": "hpa", "max_replicas": 4, "metrics": [
        {"type": "resource", "name": "gpu_utilization", "target_utilization": 0.5}]}},
     "autoscaler.type = 'hpa': streaming consumers scale with type static or keda"),
    ({"streaming": {"partitions": 0}}, "streaming.partitions = 0: must be greater than or equal to 1"),
    ({"streaming": {"checkpoint_interval_s": 2, "checkpoint_pause_s": 2}},
     "checkpoint_pause_s (2) must be below checkpoint_interval_s (2)"),
    ({"streaming": {"backpressure": "stall"}}, "streaming.backpressure = 'stall': must be 'block' or 'drop'"),
    ({"batching": {"max_batch_size": 4, "timeout_s": 1.0}}, "batching: streaming bounds the buffer"),
    ({"fleet": {"replicas": 2, "router": "random"}}, "fleet: streaming consumers read fleet.replicas"),
    ({"streaming": None, "autoscaler": {"type": "keda"}}, "autoscaler.type = 'keda': KEDA's Kafka scaler reads"),
    ({"autoscaler": {"type": "keda", "lag_treshold": 5}}, "unknown key 'lag_treshold' in autoscaler; did you mean "
                                                          "'lag_threshold'?"),
])
def test_bad_streaming_scenarios_are_one_line(changes, message):
    with pytest.raises(sim.ScenarioError) as err:
        sim.scenario_from_dict({**STREAM, **changes})
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["streaming_iot", "streaming_keda"])
def test_examples_simulate_and_the_doc_covers_their_keys(capsys, tmp_path, name):
    out = tmp_path / name
    assert main(["simulate", str(EXAMPLES / f"{name}.yaml"), "--set", "run.duration_s=40", "--set", "run.warmup_s=5",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "consumer lag (max)" in printed and "producer stalled" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lag_events_max"] >= 0 and summary["requests_total"] > 0
    doc = (Path(__file__).parents[1] / "docs" / "results.md").read_text()
    documented = set(pd.Series(doc.splitlines()).str.extract(r"^\| `([a-z0-9_{}P]+)` \|")[0].dropna())
    keys = {"latency_p{P}_slo_s" if k.endswith("_slo_s") else k for k in summary if k != "scenario"}
    assert keys <= documented, keys - documented
    for table in ("requests", "batches", "timeseries", "replicas"):
        columns = set(pd.read_parquet(out / f"{table}.parquet").columns)
        assert columns <= documented, columns - documented
