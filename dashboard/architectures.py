"""The offline-and-streaming page's logic: scenario updates from its inputs and the closed forms beside the
simulation (pure functions), and the cached runs (pure functions of YAML text, base directory and seed that
return plain data, as in ``dashboard/compute.py``). Errors a user can cause are ``CapsimError``s and are not
cached, so fixing the input recomputes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from sim.architectures.offline import price_usd_per_replica_hour, simulate_job
from sim.architectures.streaming import stream_capacity_events_per_s
from sim.errors import ScenarioError
from sim.experiments.sweep import evaluate_or_error, run_scenarios
from sim.planner.search import scale_traffic
from sim.runner import run_once, streams
from sim.scaling.lifecycle import cold_start_phases
from sim.scenario.keys import updated
from sim.scenario.load import scenario_from_yaml_text
from sim.scenario.model import Scenario, mean_rate_rps
from sim.serving.service import build_service
from sim.theory.architectures import lag_growth_events_per_s, offline_makespan_s, offline_rounds
from sim.workload.arrivals import expected_count

EXAMPLES = {"offline": "architectures/offline_rescoring", "streaming": "architectures/streaming_iot"}
MAX_EVENTS = 1_500_000  # events one streaming run of the page may draw
FLEET_OFFSETS = (-2, -1, 0, 1, 2, 4)  # the replica counts the offline sweep tries around the chosen one


# ---------------------------------------------------------------- offline: inputs and closed form
@dataclass(frozen=True)
class OfflineInputs:
    items: int
    deadline_s: float
    replicas: int
    batch_size: int
    capacity_type: str
    spot_discount: float
    interruptions_per_hour: float


def offline_updates(i: OfflineInputs) -> dict:
    """Dotted updates of an offline scenario from the page's inputs."""
    return {"offline.items": i.items, "offline.dataset_bytes": None, "offline.item_bytes": None,
            "offline.deadline_s": i.deadline_s, "fleet.replicas": i.replicas, "batching.max_batch_size": i.batch_size,
            "offline.capacity_type": i.capacity_type, "offline.spot_discount": i.spot_discount,
            "offline.spot_interruptions_per_hour": i.interruptions_per_hour}


def offline_formula(scenario: Scenario) -> dict[str, float]:
    """The hand formula's terms for the scenario: mean batch time S(B), mean cold start C (no readiness
    probe: nothing routes to a batch worker), rounds ⌈N/(K·B)⌉ and makespan C + rounds·S(B)."""
    off, b, k = scenario.offline, scenario.batching.max_batch_size, scenario.fleet.replicas
    service = build_service(scenario, np.random.default_rng(0))
    batch_s = service.mean_s(b)
    rows = cold_start_phases(scenario.cold_start, getattr(service, "profile", None),
                             getattr(scenario.service, "warmed_up", True))
    cold_s = sum(seconds for name, seconds, _ in rows if name != "readiness probe")
    return {"batch_s": batch_s, "cold_start_s": cold_s, "rounds": offline_rounds(off.job_items, k, b),
            "makespan_s": offline_makespan_s(off.job_items, k, b, batch_s, cold_s),
            "price_usd_per_replica_hour": price_usd_per_replica_hour(scenario)}


def fleet_counts(replicas: int) -> tuple[int, ...]:
    """Replica counts around ``replicas`` for the makespan-and-cost sweep."""
    return tuple(sorted({max(1, replicas + d) for d in FLEET_OFFSETS}))


# ---------------------------------------------------------------- streaming: inputs and closed form
@dataclass(frozen=True)
class StreamInputs:
    rate_per_s: float
    duration_s: float
    partitions: int  # 0: one shared queue
    partition_capacity_events: int
    backpressure: str
    consumers: int
    keda: bool
    lag_threshold: int
    max_replicas: int
    checkpoint_interval_s: float  # 0: none
    checkpoint_pause_s: float


def stream_updates(base: Scenario, i: StreamInputs) -> dict:
    """Dotted updates of a streaming scenario from the page's inputs (rates scaled to ``rate_per_s``)."""
    rate = mean_rate_rps(base.workload.arrivals)
    traffic = scale_traffic(base, i.rate_per_s / rate) if math.isfinite(rate) and rate > 0 else {}
    interval = i.checkpoint_interval_s or None
    autoscaler = ({"type": "keda", "min_replicas": 1, "max_replicas": i.max_replicas, "lag_threshold": i.lag_threshold,
                   "initial_replicas": i.consumers} if i.keda else {"type": "static"})
    return {**traffic, "run.duration_s": i.duration_s, "run.requests": None,
            "run.warmup_s": min(base.run.warmup_s, 0.1 * i.duration_s), "run.sample_interval_s": None,
            "streaming.partitions": i.partitions or None,
            "streaming.partition_capacity_events": i.partition_capacity_events,
            "streaming.backpressure": i.backpressure, "streaming.checkpoint_interval_s": interval,
            "streaming.checkpoint_pause_s": i.checkpoint_pause_s if interval else 0.0,
            "fleet.replicas": i.consumers, "autoscaler": autoscaler}


def stream_theory(scenario: Scenario) -> dict[str, float]:
    """Offered rate λ, the consumers' capacity μ (at most one per partition, less checkpoint pauses) and the
    lag growth (λ − μ)⁺ they imply."""
    service = build_service(scenario, np.random.default_rng(0))
    rate = mean_rate_rps(scenario.workload.arrivals)
    capacity = stream_capacity_events_per_s(scenario, service)
    return {"rate_per_s": rate, "capacity_per_s": capacity, "lag_growth_per_s": lag_growth_events_per_s(rate, capacity)}


def check_stream_size(scenario: Scenario, limit: int = MAX_EVENTS) -> None:
    n = expected_count(scenario)
    if math.isfinite(n) and n > limit:
        raise ScenarioError(f"this stream would draw about {n:,.0f} events; the page allows {limit:,}: lower the "
                            "simulated time or the event rate")


# ---------------------------------------------------------------- cached runs
@st.cache_data(max_entries=16, show_spinner="Simulating the job…")
def offline_job(yaml_text: str, base_dir: str, seed: int) -> tuple[dict, pd.DataFrame]:
    """One replication of the job: its summary and time series (no per-item rows)."""
    job = simulate_job(scenario_from_yaml_text(yaml_text, base_dir), streams(seed, 0))
    return dict(job.summary), job.timeseries


@st.cache_data(max_entries=8, show_spinner="Simulating the job on other fleets…")
def offline_fleets(yaml_text: str, base_dir: str, seed: int, counts: tuple[int, ...]) -> pd.DataFrame:
    """Makespan and cost of the job on ``counts`` replicas, through the simulator's loop over many scenarios."""
    scenario = scenario_from_yaml_text(yaml_text, base_dir)
    labelled = [({"replicas": k}, updated(scenario, {"fleet.replicas": k})) for k in counts]
    result = run_scenarios(labelled, ["replicas"], replications=1, seed=seed, progress=False,
                           evaluate_fn=evaluate_or_error)
    keep = ("replicas", "makespan_s", "cost_usd", "gpu_hours", "deadline_met", "utilization", "error")
    return pd.DataFrame([{k: r.get(k) for k in keep} for r in result.records]).sort_values("replicas")


@st.cache_data(max_entries=16, show_spinner="Simulating the stream…")
def stream_run(yaml_text: str, base_dir: str, seed: int) -> tuple[dict, pd.DataFrame]:
    """One replication of the stream: its summary and time series."""
    scenario = scenario_from_yaml_text(yaml_text, base_dir)
    check_stream_size(scenario)
    _, _, timeseries, _, summary = run_once(scenario, seed, 0)
    return dict(summary), timeseries
