"""The online-architectures page's logic: scenario updates from its inputs, the closed forms beside the runs
and per-site tables (pure functions), and the cached sweep of the overlap what-if (a pure function of YAML
text, base directory and seed that returns plain data, as in ``dashboard/compute.py``). Single runs go
through ``compute.simulate``. Errors a user can cause are ``CapsimError``s and are not cached."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import whatif
from sim.scaling.lifecycle import cold_start_phases
from sim.scenario.load import scenario_from_yaml_text
from sim.scenario.model import Scenario
from sim.theory.availability import steady_availability
from sim.theory.caches import lru_hit_ratio, perfect_lfu_hit_ratio, zipf_popularity

EXAMPLES = {"cache": "architectures/caching", "edge": "architectures/edge", "failures": "architectures/failures",
            "overlap": "architectures/overlap"}
MAX_REQUESTS = 50_000  # requests one run of the page simulates at most (the horizon is cut to fit)
SWEEP_REQUESTS = 10_000  # per point of the overlap sweep
CACHE_REQUESTS, CACHE_WARMUP_SHARE = 150_000, 0.4  # a cache fills up first: measured after 40% of the run
LOAD_FACTORS = (0.6, 1.0, 1.4, 2.0)  # offered load / the serial loop's capacity


# ---------------------------------------------------------------- caching
@dataclass(frozen=True)
class CacheInputs:
    policy: str
    capacity_entries: int
    ttl_s: float
    scope: str
    lookup_s: float
    distinct_keys: int
    exponent: float


def cache_updates(i: CacheInputs) -> dict:
    return {"cache": {"policy": i.policy, "capacity_entries": i.capacity_entries,
                      "ttl_s": i.ttl_s if i.policy == "ttl" else None, "scope": i.scope, "lookup_s": i.lookup_s,
                      "keys": {"source": "zipf", "distinct_keys": i.distinct_keys, "exponent": i.exponent}}}


def cache_theory_curve(distinct_keys: int, exponent: float, capacity_entries: int, points: int = 12) -> pd.DataFrame:
    """Hit ratio against capacity under Zipf keys: Che's LRU approximation and the perfect-LFU bound."""
    popularity = zipf_popularity(distinct_keys, exponent)
    top = max(capacity_entries * 4, 10)
    capacities = sorted({int(c) for c in np.geomspace(1, min(top, distinct_keys), points)} | {capacity_entries})
    capacities = [c for c in capacities if c <= distinct_keys]
    return pd.DataFrame({"capacity_entries": capacities,
                         "lru_che": [lru_hit_ratio(popularity, c) for c in capacities],
                         "perfect_lfu": [perfect_lfu_hit_ratio(popularity, c) for c in capacities]})


# ---------------------------------------------------------------- edge
def edge_updates(site_replicas: list[int], edge_queue_limit: int) -> dict:
    updates: dict = {f"edge.sites[{k}].replicas": n for k, n in enumerate(site_replicas)}
    updates["edge.edge_queue_limit"] = edge_queue_limit
    return updates


def site_table(requests: pd.DataFrame) -> pd.DataFrame:
    """Per site: its share of the served requests, their round trip and latency percentiles (seconds)."""
    served = requests[requests["outcome"] == "served"]
    rows = []
    for site, group in served.groupby("site", observed=True):
        latency = group["latency_s"].to_numpy()
        rows.append({"site": str(site), "share": len(group) / max(len(served), 1),
                     "network_mean_s": float(group["network_s"].mean()),
                     "latency_p50_s": float(np.percentile(latency, 50)),
                     "latency_p99_s": float(np.percentile(latency, 99)),
                     "spilled_share": float(group["spilled"].mean())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- failures
@dataclass(frozen=True)
class FailureInputs:
    replicas: int
    replica_mtbf_s: float  # 0: replicas do not fail on their own
    node_mtbf_s: float  # 0: no node failures
    replicas_per_node: int
    in_flight: str
    max_attempts: int


def failure_updates(i: FailureInputs) -> dict:
    section = {"replica_mtbf_s": i.replica_mtbf_s or None, "node_mtbf_s": i.node_mtbf_s or None,
               "replicas_per_node": i.replicas_per_node, "in_flight": i.in_flight}
    if i.in_flight == "retried":
        section["retry"] = {"max_attempts": i.max_attempts}
    return {"fleet.replicas": i.replicas, "failures": section}


def expected_availability(scenario: Scenario) -> tuple[float, float]:
    """(MTTR = the mean cold start, MTBF / (MTBF + MTTR)); with node failures a replica's MTBF is taken as
    1 / (1/replica MTBF + 1/node MTBF), an approximation (a node's clock does not restart with its replicas)."""
    spec = scenario.failures
    mttr = sum(seconds for _, seconds, _ in cold_start_phases(scenario.cold_start, None,
                                                              getattr(scenario.service, "warmed_up", True)))
    rates = [1 / m for m in (spec.replica_mtbf_s, spec.node_mtbf_s) if m]
    return mttr, steady_availability(1 / sum(rates), mttr)


# ---------------------------------------------------------------- overlap
def overlap_updates(host_s: float, host_per_item_s: float) -> dict:
    return {"overlap.host_s": host_s, "overlap.host_per_item_s": host_per_item_s}


@st.cache_data(max_entries=8, show_spinner="Simulating the serial and the pipelined loop…")
def overlap_sweep(yaml_text: str, base_dir: str, seed: int, serial_capacity_rps: float) -> pd.DataFrame:
    """Throughput of the serial and the pipelined loop at offered loads around the serial capacity."""
    scenario = scenario_from_yaml_text(yaml_text, base_dir)
    scenario = whatif.shortened(scenario, SWEEP_REQUESTS)
    rates = [round(f * serial_capacity_rps, 3) for f in LOAD_FACTORS]
    updates = [{"overlap.mode": mode, "workload.arrivals.process": "poisson", "workload.arrivals.rate_rps": rate}
               for mode in ("serial", "pipelined") for rate in rates]
    frame = whatif.sweep(scenario, updates, seed)
    return frame.rename(columns={"overlap.mode": "mode", "workload.arrivals.rate_rps": "offered_rps"})


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
