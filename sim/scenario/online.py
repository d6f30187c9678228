"""Scenario sections of online serving architectures: ``cache:``, ``edge:``, ``failures:`` and ``overlap:``.

Each section switches on one architecture around the request-level engine (``sim.architectures``):

* ``cache``: a result cache in front of the model (shared, or one per replica); a hit costs a lookup, a miss
  goes to the model and its result is stored when the model answers.
* ``edge``: users in regions, each with network round-trip times to the serving sites; small edge sites
  beside the central fleet (``fleet``), the nearest site taking a region's traffic and spilling to the
  central region while its queue is full.
* ``failures``: replicas (and nodes of replicas) fail after random up times; what they held is lost or
  retried, and a replacement cold-starts (``cold_start``).
* ``overlap``: the host side of a batch (pre/post-processing, copies) overlapped with the device work of
  the previous batch (a two-stage pipeline), against the serial loop.

See docs/architectures.md for the model and docs/scenario.md for every key.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from sim.scenario.base import NonNegFloat, PositiveFloat, Section

ONLINE_SECTIONS = ("cache", "edge", "failures", "overlap")
DISTRIBUTIONS = Literal["deterministic", "exponential", "lognormal", "gamma"]
CENTRAL = "central"  # the name of the central region's site (the scenario's own fleet)


# ---------------------------------------------------------------- cache
class CacheKeys(Section):
    source: Literal["zipf", "trace"] = Field(default="zipf", description="zipf: keys drawn i.i.d. from a Zipf "
                                             "law; trace: a column of the arrival trace.")
    distinct_keys: int | None = Field(default=None, ge=1, le=100_000_000, description="zipf: K, the number of "
                                      "distinct keys (users, inputs).")
    exponent: NonNegFloat = Field(default=1.0, le=10, description="zipf: s; key k (1 = most popular) is asked "
                                  "with probability ∝ k^-s (0 = uniform).")
    column: str = Field(default="key", description="trace: the column of workload.arrivals.path holding each "
                        "request's key (any values; equal values are one key).")

    @model_validator(mode="after")
    def _one_source(self) -> CacheKeys:
        if self.source == "zipf" and self.distinct_keys is None:
            raise ValueError("source zipf needs distinct_keys (K)")
        if self.source == "trace" and self.distinct_keys is not None:
            raise ValueError("distinct_keys is for source zipf; a trace's keys are its column's values")
        return self


class Cache(Section):
    policy: Literal["lru", "lfu", "ttl"] = Field(default="lru", description="lru: evict the least recently "
                                                 "used; lfu: the least frequently used (ties: least recent); "
                                                 "ttl: an entry expires ttl_s after it was stored.")
    capacity_entries: int = Field(ge=1, le=100_000_000, description="Results one cache holds, entries.")
    ttl_s: PositiveFloat | None = Field(default=None, description="ttl: lifetime of a stored result, seconds.")
    scope: Literal["shared", "per_replica"] = Field(default="shared", description="shared: one cache in front of "
                                                    "the router; per_replica: each replica has its own (a new "
                                                    "replica starts empty).")
    lookup_s: NonNegFloat = Field(default=0.0005, description="Time a lookup takes, hit or miss, seconds.")
    keys: CacheKeys = Field(description="Where each request's key comes from.")

    @model_validator(mode="after")
    def _ttl(self) -> Cache:
        if self.policy == "ttl" and self.ttl_s is None:
            raise ValueError("policy ttl needs ttl_s")
        if self.policy != "ttl" and self.ttl_s is not None:
            raise ValueError(f"ttl_s = {self.ttl_s:g} is for policy ttl (policy is {self.policy!r})")
        return self


# ---------------------------------------------------------------- edge
class NetworkTime(Section):
    mean_s: NonNegFloat = Field(description="Mean round-trip time, seconds.")
    distribution: DISTRIBUTIONS = Field(default="deterministic", description="Shape around the mean.")
    cv: PositiveFloat | None = Field(default=None, description="Coefficient of variation (lognormal, gamma).")

    @model_validator(mode="after")
    def _cv(self) -> NetworkTime:
        if self.distribution in ("lognormal", "gamma") and self.cv is None:
            raise ValueError(f"distribution {self.distribution!r} needs cv")
        return self


class Region(Section):
    name: str = Field(description="Label of the users' region.")
    share: float = Field(gt=0, le=1, description="Share of all requests sent from this region.")
    rtt_s: dict[str, NetworkTime] = Field(description="Round-trip time from this region to each site it can "
                                          "reach, by site name; `central` is required.")


class EdgeSite(Section):
    name: str = Field(description="Label of the edge site (not `central`).")
    replicas: int = Field(ge=1, le=10000, description="Replicas at this site (a fixed fleet).")
    service_time_scale: PositiveFloat = Field(default=1.0, description="A batch here takes this many times as "
                                              "long as on a central replica (a smaller device: > 1).")
    profile: str | None = Field(default=None, description="Or another profile for this site's replicas "
                                "(service.type profile).")
    usd_per_replica_hour: NonNegFloat | None = Field(default=None, description="Price of one replica here per hour "
                                                     "(default: cost.usd_per_replica_hour).")


class Edge(Section):
    regions: list[Region] = Field(min_length=1, description="Where requests come from; shares sum to 1.")
    sites: list[EdgeSite] = Field(min_length=1, description="Edge sites beside the central fleet (`fleet`).")
    edge_queue_limit: int = Field(default=8, ge=1, description="A request whose nearest site is an edge site "
                                  "goes to the central region instead when that site already has this many "
                                  "requests waiting (all its replicas), requests.")

    @model_validator(mode="after")
    def _consistent(self) -> Edge:
        names = [s.name for s in self.sites]
        if CENTRAL in names or len(set(names)) < len(names):
            raise ValueError(f"site names must be distinct and not {CENTRAL!r}, got {names}")
        total = sum(r.share for r in self.regions)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"region shares must sum to 1, got {total:g}")
        for region in self.regions:
            unknown = sorted(set(region.rtt_s) - set(names) - {CENTRAL})
            if unknown or CENTRAL not in region.rtt_s:
                raise ValueError(f"regions {region.name!r}: rtt_s needs {CENTRAL!r} and may name the sites "
                                 f"{names}" + (f"; unknown: {unknown}" if unknown else ""))
        return self


# ---------------------------------------------------------------- failures
class Retry(Section):
    max_attempts: int = Field(default=3, ge=1, le=100, description="Attempts of one request in all (1 = no "
                              "retry).")
    backoff_s: NonNegFloat = Field(default=0.05, description="Wait before the first retry, seconds.")
    backoff_multiplier: float = Field(default=2.0, ge=1, le=100, description="Each further retry waits this "
                                      "many times longer.")
    budget_share: float = Field(default=0.2, ge=0, le=1, description="Retry budget: retries so far may not "
                                "exceed this share of the requests arrived so far ...")
    budget_min_retries: int = Field(default=10, ge=0, description="... plus this many, retries.")


class Failures(Section):
    replica_mtbf_s: PositiveFloat | None = Field(default=None, description="Mean up time of a ready replica "
                                                 "before it fails (MTBF), seconds; null = replicas do not fail "
                                                 "on their own.")
    distribution: Literal["exponential", "weibull"] = Field(default="exponential", description="Law of the up "
                                                            "times (replicas and nodes).")
    weibull_shape: PositiveFloat | None = Field(default=None, description="weibull: shape k (< 1 infant "
                                                "mortality, > 1 wear-out); the scale gives the MTBF.")
    node_mtbf_s: PositiveFloat | None = Field(default=None, description="Mean time between failures of one node, "
                                              "which takes all its replicas down, seconds; null = none.")
    replicas_per_node: int = Field(default=8, ge=1, le=1024, description="Replicas one node holds (replica "
                                   "slots 0..k-1 on node 0, and so on).")
    in_flight: Literal["lost", "retried"] = Field(default="retried", description="What happens to the requests "
                                                  "a failed replica held (queued or running).")
    retry: Retry = Field(default_factory=Retry, description="retried: attempts, backoff and budget.")

    @model_validator(mode="after")
    def _consistent(self) -> Failures:
        if self.replica_mtbf_s is None and self.node_mtbf_s is None:
            raise ValueError("give replica_mtbf_s or node_mtbf_s (or both)")
        if (self.distribution == "weibull") != (self.weibull_shape is not None):
            raise ValueError("weibull_shape goes with distribution weibull, and only with it")
        if self.in_flight == "lost" and self.retry != Retry():
            raise ValueError("retry is read only when in_flight is 'retried'; remove it")
        return self


# ---------------------------------------------------------------- overlap
class Overlap(Section):
    mode: Literal["serial", "pipelined"] = Field(default="pipelined", description="serial: host work, then "
                                                 "device work, then the next batch; pipelined: the host "
                                                 "prepares the next batch while the device runs this one.")
    host_s: NonNegFloat | None = Field(default=None, description="Host work per batch (pre/post-processing, "
                                       "copies), seconds. Default: the profile's measured host overhead.")
    host_per_item_s: NonNegFloat = Field(default=0.0, description="Added host work per request in the batch, "
                                         "seconds (with host_s).")
    host_distribution: DISTRIBUTIONS = Field(default="deterministic", description="Shape of the host time "
                                             "around host_s + host_per_item_s * b.")
    host_cv: PositiveFloat | None = Field(default=None, description="Coefficient of variation of the host time "
                                          "(lognormal, gamma).")

    @model_validator(mode="after")
    def _host(self) -> Overlap:
        if self.host_s is None and (self.host_per_item_s or self.host_distribution != "deterministic"):
            raise ValueError("host_per_item_s and host_distribution shape host_s; give host_s")
        if self.host_distribution in ("lognormal", "gamma") and self.host_cv is None:
            raise ValueError(f"host_distribution {self.host_distribution!r} needs host_cv")
        return self


def online_problem(scenario) -> str | None:
    """What makes the online architectures of ``scenario`` inconsistent (None if nothing)."""
    used = [k for k in ONLINE_SECTIONS if getattr(scenario, k, None) is not None]
    if not used:
        return None
    other = [k for k in ("llm", "offline", "streaming") if getattr(scenario, k, None) is not None]
    if other or scenario.service is None:
        return f"{used[0]}: applies to request-level online serving; remove {other[0] if other else used[0]}"
    cache, edge, overlap = scenario.cache, scenario.edge, scenario.overlap
    if cache is not None and cache.keys.source == "trace" and scenario.workload.arrivals.process != "trace":
        return "cache.keys.source = 'trace': the keys are a column of the arrival trace; workload.arrivals " \
               "must be a trace (or use source zipf)"
    if edge is not None:
        with_edge = [k for k in ("cache", "failures", "overlap") if getattr(scenario, k) is not None]
        if with_edge:
            return f"edge, {with_edge[0]}: edge sites are simulated on their own; remove one of the two sections"
        if scenario.autoscaler.type != "static":
            return f"autoscaler.type = {scenario.autoscaler.type!r}: edge sites are fixed fleets; use static"
        if any(s.profile for s in edge.sites) and scenario.service.type != "profile":
            return "edge.sites: profile needs service.type profile (use service_time_scale otherwise)"
    if overlap is not None:
        if overlap.mode == "pipelined" and scenario.fleet.instances_per_replica != 1:
            return (f"fleet.instances_per_replica = {scenario.fleet.instances_per_replica}: the pipelined loop "
                    "runs one host thread and one device stream per replica; give 1")
        profile_host = scenario.service.type == "profile" and scenario.service.host_overhead
        if overlap.host_s is None and not profile_host:
            return "overlap.host_s: missing; the service has no measured host overhead to overlap (give host_s)"
    return None
