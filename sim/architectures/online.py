"""Online serving with its architectures around the request-level engine: caches, edge sites, failures, overlap.

``sim.runner.run_once`` draws the arrivals and fixes the horizon, drain and sampling interval, then hands a
scenario with any of the sections ``cache``, ``edge``, ``failures`` or ``overlap`` here. Each section is an
:class:`Architecture`: it may change what the engine runs (its copy of the fleet, the service sampler, the
router), attach itself to the engine through the engine's public contract (a front for arrivals,
listeners, failures), add columns to the records and figures to the summary. Everything else is the
online run: the same engine, autoscalers, records, time series and summary (``summarize``).

Random streams: each architecture draws from its own child of the replication's ``architectures`` stream,
so switching one on leaves the arrivals, service times and routing of the others as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from sim.results.metrics import summarize
from sim.results.records import to_frames
from sim.results.timeline import enrich_timeseries
from sim.scaling.scaler import attach_autoscaler
from sim.scenario.model import mean_rate_rps
from sim.scenario.online import ONLINE_SECTIONS
from sim.serving.capacity import fleet_capacity_rps
from sim.serving.engine import Engine
from sim.serving.routers import build_router
from sim.serving.service import build_service


class Architecture:
    """One online architecture; every step is optional (the defaults change nothing)."""

    fleet_updates: Mapping = MappingProxyType({})  # fields of the engine's copy of ``fleet`` (replicas, buffers)

    def wrap_service(self, service):
        return service

    def wrap_router(self, router):
        return router

    def attach(self, engine, scaler) -> None:
        """Hook into the engine (and the autoscaler's fleet, None for a static fleet) before it runs."""

    def finish(self, raw) -> None:
        """Add this architecture's columns to ``raw.extra`` (``sim.results.records.to_frames``)."""

    def capacity_rps(self) -> float | None:
        """The fleet's capacity when this architecture decides it (None: the service's)."""
        return None

    def extend(self, summary: dict, requests, batches, timeseries, replicas, window: tuple[float, float]) -> None:
        """Add this architecture's figures to ``summary`` and columns to ``timeseries`` (in place)."""


def has_online_architecture(scenario) -> bool:
    return any(getattr(scenario, key, None) is not None for key in ONLINE_SECTIONS)


def engine_view(scenario, fleet_updates: Mapping):
    """The engine's copy of the scenario: ``fleet`` with the architectures' changes (not a user scenario, so
    not validated again: a pipelined replica runs two batch buffers on its one instance)."""
    if not fleet_updates:
        return scenario
    return scenario.model_copy(update={"fleet": scenario.fleet.model_copy(update=fleet_updates)})


def build_architectures(scenario, arrivals: np.ndarray, rng: dict, service) -> list[Architecture]:
    """The scenario's architectures, in the order they wrap the engine."""
    from sim.architectures.cache import ResultCache
    from sim.architectures.edge import EdgeSites
    from sim.architectures.failures import ReplicaFailures
    from sim.architectures.overlap import HostDeviceOverlap

    keys, network, failures, host = rng["architectures"].spawn(4)
    parts: list[Architecture] = []
    if scenario.overlap is not None:
        parts.append(HostDeviceOverlap(scenario, service, host))
    if scenario.cache is not None:
        parts.append(ResultCache(scenario, arrivals, keys))
    if scenario.edge is not None:
        parts.append(EdgeSites(scenario, service, network, arrivals.size))
    if scenario.failures is not None:
        parts.append(ReplicaFailures(scenario, arrivals, failures, getattr(service, "profile", None)))
    return parts


def run_online_once(scenario, arrivals: np.ndarray, rng: dict, *, horizon_s: float, stop_s: float,
                    interval_s: float):
    """(requests, batches, timeseries, replicas, summary) of one replication with the scenario's architectures."""
    from sim.architectures.overlap import device_scenario

    service = build_service(device_scenario(scenario), rng["service"])
    router = build_router(scenario.fleet.router, rng["routing"])
    parts = build_architectures(scenario, arrivals, rng, service)
    fleet_updates: dict = {}
    for part in parts:
        service, router = part.wrap_service(service), part.wrap_router(router)
        fleet_updates.update(part.fleet_updates)
    engine = Engine(engine_view(scenario, fleet_updates), arrivals, service, router, sample_interval_s=interval_s,
                    horizon_s=horizon_s, stop_s=stop_s)
    scaler = attach_autoscaler(engine, scenario, rng["lifecycle"], getattr(service, "profile", None))
    for part in parts:
        part.attach(engine, scaler)
    raw = engine.run()
    for part in parts:
        part.finish(raw)
    requests, batches, timeseries, replicas = to_frames(raw)
    timeseries = enrich_timeseries(timeseries, requests, batches, replicas, scenario, interval_s)
    capacities = [c for c in (part.capacity_rps() for part in parts) if c is not None]
    summary = summarize(
        requests, batches, replicas,
        warmup_s=scenario.run.warmup_s, horizon_s=horizon_s,
        slo_latency_s=scenario.slo.latency_s, slo_percentile=scenario.slo.percentile,
        usd_per_replica_hour=scenario.cost.usd_per_replica_hour,
        offered_rps=mean_rate_rps(scenario.workload.arrivals),
        capacity_rps=capacities[0] if capacities else fleet_capacity_rps(scenario, service),
        queue_bounded=bool(scenario.batching.max_queue_size or scenario.batching.timeout_s),
    )
    for part in parts:
        part.extend(summary, requests, batches, timeseries, replicas, (scenario.run.warmup_s, horizon_s))
    return requests, batches, timeseries, replicas, summary
