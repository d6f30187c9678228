"""Running a scenario: seeds, replications, and the Result users get back.

One root seed spawns one ``SeedSequence`` per replication, and each of those spawns independent
streams for arrivals, service times and routing (and the replica lifecycle). The arrival stream
depends only on (seed, replication), so configurations compared under one seed see the same traffic
(common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sim.architectures.offline import check_job_size, run_offline_once
from sim.architectures.online import has_online_architecture, run_online_once
from sim.architectures.streaming import run_stream_once
from sim.errors import ScenarioError
from sim.llm.run import run_llm_once
from sim.results.metrics import replicate_summary, summarize
from sim.results.records import to_frames
from sim.results.timeline import enrich_timeseries
from sim.scaling.scaler import attach_autoscaler
from sim.scenario.keys import with_run_flags
from sim.scenario.model import Scenario, mean_rate_rps
from sim.serving.capacity import fleet_capacity_rps
from sim.serving.engine import Engine
from sim.serving.routers import build_router
from sim.serving.service import build_service
from sim.workload.arrivals import arrival_times, expected_count

# Appended streams leave the others as they were (SeedSequence children are numbered).
STREAMS = ("arrivals", "service", "routing", "lifecycle", "tokens", "architectures", "prefixes",
           "conversations", "classes")  # new ones last: the others keep their seeds
BYTES_PER_REQUEST = 270  # peak memory per request of a run (measured: 1M and 3M requests of the fraud_mlp example)
MAX_SAMPLES = 2_000_000  # time-series samples of one replication
DEFAULT_DRAIN_S = 60.0  # run.drain_s default: the horizon, and at least this


@dataclass
class Result:
    """What a run returns: flat per-request records, the batch log, time series and the summary."""

    scenario: Scenario
    requests: pd.DataFrame
    batches: pd.DataFrame
    timeseries: pd.DataFrame
    replicas: pd.DataFrame
    summary: dict
    per_replication: list[dict] = field(default_factory=list)


def streams(seed: int, replication: int) -> dict[str, np.random.Generator]:
    """Independent generators for one replication, derived from the root seed only."""
    rep = np.random.SeedSequence(seed).spawn(replication + 1)[replication]
    return {name: np.random.default_rng(ss) for name, ss in zip(STREAMS, rep.spawn(len(STREAMS)))}


def run(scenario: Scenario, seed: int | None = None, replications: int | None = None,
        progress: bool = False) -> Result:
    """Simulate ``scenario``; ``seed`` and ``replications`` override its ``run`` section (checked as it is)."""
    scenario = with_run_flags(scenario, seed, replications)
    check_size(scenario)
    seed, reps = scenario.run.seed, scenario.run.replications
    frames: list[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]] = []
    summaries: list[dict] = []
    iterator = range(reps)
    if progress and reps > 1:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"{scenario.name}: replications", unit="run")
    for r in iterator:
        req, bat, ts, rep, summary = run_once(scenario, seed, r)
        for frame in (req, bat, ts, rep):
            frame.insert(0, "replication", r)
        frames.append((req, bat, ts, rep))
        summaries.append(summary)
    requests, batches, timeseries, replicas = (pd.concat([f[k] for f in frames], ignore_index=True)
                                               for k in range(4))
    summary = replicate_summary(summaries)
    summary["seed"] = seed
    return Result(scenario, requests, batches, timeseries, replicas, summary, summaries)


def check_size(scenario: Scenario) -> None:
    """Refuse, before anything is drawn, a run expected to draw more than ``run.max_requests`` arrivals."""
    if scenario.offline is not None:  # one requests row per item of the job
        check_job_size(scenario, BYTES_PER_REQUEST)
        return
    n, limit = expected_count(scenario), scenario.run.max_requests
    if n > limit:
        raise ScenarioError(
            f"run: about {n:,.0f} requests expected from the workload over run.duration_s, about "
            f"{n * BYTES_PER_REQUEST / 1e9:,.1f} GB of memory; run.max_requests = {limit:,}: lower the rate or "
            "run.duration_s, or raise run.max_requests to simulate it")


def run_once(scenario: Scenario, seed: int, replication: int = 0):
    """One replication: (requests, batches, timeseries, replicas frames, summary dict)."""
    rng = streams(seed, replication)
    if scenario.offline is not None:  # a batch job, no arrivals: sim/architectures/offline.py
        return run_offline_once(scenario, rng, max_samples=MAX_SAMPLES)
    arrivals = arrival_times(scenario, rng["arrivals"])
    if arrivals.size == 0:
        raise ScenarioError("workload: the arrival process produced no request within the run horizon; "
                            "raise run.duration_s or the rate")
    # A request-count run ends just after its last arrival, so the window [warmup, horizon) holds all N.
    horizon = (scenario.run.duration_s if scenario.run.duration_s is not None
               else float(np.nextafter(arrivals[-1], np.inf)))
    if scenario.run.warmup_s >= horizon:
        raise ScenarioError(f"run.warmup_s = {scenario.run.warmup_s}: must be below the horizon "
                            f"({horizon:.6g} s, the last of {arrivals.size} arrivals)")
    drain = max(horizon, DEFAULT_DRAIN_S) if scenario.run.drain_s is None else scenario.run.drain_s
    interval = scenario.run.sample_interval_s or max(horizon / 600.0, 0.01)
    if (horizon + drain) / interval > MAX_SAMPLES:
        raise ScenarioError(f"run.sample_interval_s = {interval:g}: {(horizon + drain) / interval:,.0f} time-series "
                            f"samples over the horizon and drain ({horizon + drain:g} s); at most {MAX_SAMPLES:,}: "
                            "raise it")
    if scenario.streaming is not None:  # event-driven inference: sim/architectures/streaming.py
        return run_stream_once(scenario, arrivals, rng, horizon_s=horizon, stop_s=horizon + drain, interval_s=interval)
    if scenario.llm is not None:  # token-level serving: sim/llm/
        return run_llm_once(scenario, arrivals, rng, horizon_s=horizon, stop_s=horizon + drain, interval_s=interval)
    if has_online_architecture(scenario):  # caches, edge sites, failures, overlap: sim/architectures/online.py
        return run_online_once(scenario, arrivals, rng, horizon_s=horizon, stop_s=horizon + drain, interval_s=interval)
    service = build_service(scenario, rng["service"])
    router = build_router(scenario.fleet.router, rng["routing"])
    engine = Engine(scenario, arrivals, service, router, sample_interval_s=interval, horizon_s=horizon,
                    stop_s=horizon + drain)
    attach_autoscaler(engine, scenario, rng["lifecycle"], getattr(service, "profile", None))
    raw = engine.run()
    requests, batches, timeseries, replicas = to_frames(raw)
    timeseries = enrich_timeseries(timeseries, requests, batches, replicas, scenario, interval)
    summary = summarize(
        requests, batches, replicas,
        warmup_s=scenario.run.warmup_s, horizon_s=horizon,
        slo_latency_s=scenario.slo.latency_s, slo_percentile=scenario.slo.percentile,
        usd_per_replica_hour=scenario.cost.usd_per_replica_hour,
        offered_rps=mean_rate_rps(scenario.workload.arrivals),
        capacity_rps=fleet_capacity_rps(scenario, service),
        queue_bounded=bool(scenario.batching.max_queue_size or scenario.batching.timeout_s),
    )
    return requests, batches, timeseries, replicas, summary
