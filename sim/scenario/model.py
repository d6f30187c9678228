"""A scenario: the frozen, validated description of one serving system and its traffic.

The YAML sections map one to one onto the models below: ``workload``, ``service``, ``batching``,
``fleet``, ``slo``, ``cost`` and ``run`` (``autoscaler`` and ``cold_start`` are added by the
autoscaling layer). Every field carries its unit in its name and a help text, which
``capsim schema`` prints as JSON Schema and ``docs/scenario.md`` documents.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from sim.scenario.architectures import Offline, Streaming, architecture_problem
from sim.scenario.base import NonNegFloat, PositiveFloat, Section, union_tags
from sim.scenario.llm import Conversation, Llm, RequestClass, SharedPrefix, TokenLengths, llm_problem
from sim.scenario.online import Cache, Edge, Failures, Overlap, online_problem
from sim.scenario.scaling import Autoscaler, ColdStart, Static
from sim.serving.routers import ROUTERS
from sim.serving.waiting import SCENARIO_WAITS, WAITS


# ---------------------------------------------------------------- arrivals
class PoissonArrivals(Section):
    process: Literal["poisson"] = "poisson"
    rate_rps: PositiveFloat = Field(description="Mean arrival rate, requests per second.")


class DeterministicArrivals(Section):
    process: Literal["deterministic"]
    rate_rps: PositiveFloat = Field(description="Arrivals exactly 1/rate_rps seconds apart.")


class GammaArrivals(Section):
    process: Literal["gamma"]
    rate_rps: PositiveFloat = Field(description="Mean arrival rate, requests per second.")
    cv: PositiveFloat = Field(description="Coefficient of variation of the gaps (1 = Poisson, >1 = burstier).")


class MMPPArrivals(Section):
    process: Literal["mmpp"]
    rate_on_rps: PositiveFloat = Field(description="Poisson rate while in the bursty (on) state.")
    rate_off_rps: NonNegFloat = Field(description="Poisson rate while in the quiet (off) state.")
    mean_on_s: PositiveFloat = Field(description="Mean sojourn in the on state (exponential), seconds.")
    mean_off_s: PositiveFloat = Field(description="Mean sojourn in the off state (exponential), seconds.")


class RateStep(Section):
    at_s: NonNegFloat = Field(description="Time the rate takes effect, seconds from start.")
    rate_rps: NonNegFloat = Field(description="Rate from at_s on, requests per second.")


class StepsArrivals(Section):
    process: Literal["steps"]
    steps: list[RateStep] = Field(min_length=1, description="Piecewise-constant rate; the first step starts at 0.")

    @field_validator("steps")
    @classmethod
    def _sorted_from_zero(cls, steps: list[RateStep]) -> list[RateStep]:
        if steps[0].at_s != 0:
            raise ValueError(f"the first step must have at_s 0, got {steps[0].at_s}")
        times = [s.at_s for s in steps]
        if any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError(f"at_s values must increase strictly, got {times}")
        if max(s.rate_rps for s in steps) <= 0:
            raise ValueError("at least one step needs rate_rps > 0")
        return steps


class DiurnalArrivals(Section):
    process: Literal["diurnal"]
    mean_rps: PositiveFloat = Field(description="Mean rate over one period, requests per second.")
    amplitude: float = Field(ge=0, le=1, description="Relative swing: rate = mean*(1 + amplitude*sin(...)).")
    period_s: PositiveFloat = Field(default=86400.0, description="Length of one cycle, seconds.")
    peak_at_s: NonNegFloat = Field(default=0.0, description="Time of the first peak, seconds.")


class SpikeArrivals(Section):
    process: Literal["spike"]
    base_rps: PositiveFloat = Field(description="Rate outside the spike, requests per second.")
    spike_rps: PositiveFloat = Field(description="Rate at the top of the spike, requests per second.")
    start_s: NonNegFloat = Field(description="When the spike starts, seconds.")
    duration_s: PositiveFloat = Field(description="How long the spike holds its top rate, seconds.")
    ramp_s: NonNegFloat = Field(default=0.0, description="Linear ramp up before and down after, seconds.")


class TraceArrivals(Section):
    process: Literal["trace"]
    path: str = Field(description="CSV or Parquet file, relative to the scenario file.")
    column: str = Field(default="arrival_s", description="Column of arrival times, seconds from start.")
    time_scale: PositiveFloat = Field(default=1.0, description="Multiply trace times (0.5 = replay 2x faster).")


Arrivals = Annotated[
    PoissonArrivals
    | DeterministicArrivals
    | GammaArrivals
    | MMPPArrivals
    | StepsArrivals
    | DiurnalArrivals
    | SpikeArrivals
    | TraceArrivals,
    Field(discriminator="process"),
]
ARRIVAL_PROCESSES = union_tags(Arrivals, "process")


class Workload(Section):
    arrivals: Arrivals = Field(description="The arrival process; `process` picks the kind.")
    input_tokens: TokenLengths | None = Field(default=None, description="llm scenarios: prompt length of each "
                                              "request; `distribution` picks the kind.")
    output_tokens: TokenLengths | None = Field(default=None, description="llm scenarios: tokens each request "
                                               "generates; `distribution` picks the kind.")
    shared_prefix: SharedPrefix | None = Field(default=None, description="llm scenarios: prompts that start with "
                                               "one of a few shared prefixes (reused by the prefix cache); none: "
                                               "every prompt is its own.")
    conversation: Conversation | None = Field(default=None, description="llm scenarios: multi-turn chat; each "
                                              "arrival starts a conversation, input_tokens is each turn's new "
                                              "message; none: every request stands alone.")
    classes: list[RequestClass] | None = Field(default=None, min_length=1, max_length=16, description="llm "
                                               "scenarios: shares of the traffic with names and priorities (per-class "
                                               "figures in the summary; llm.scheduling_policy: priority serves them "
                                               "by priority); none: one class, `default`.")


# ---------------------------------------------------------------- service
class ParametricService(Section):
    type: Literal["parametric"] = "parametric"
    base_s: NonNegFloat = Field(description="Fixed cost of one batch, seconds.")
    per_item_s: NonNegFloat = Field(default=0.0, description="Added cost per request in the batch, seconds.")
    distribution: Literal["deterministic", "exponential", "lognormal", "gamma"] = Field(
        default="deterministic", description="Shape of the variability around the mean."
    )
    cv: PositiveFloat | None = Field(default=None, description="Coefficient of variation (lognormal, gamma).")

    @model_validator(mode="after")
    def _check(self) -> ParametricService:
        if self.base_s + self.per_item_s <= 0:
            raise ValueError("base_s + per_item_s must be > 0 (a batch of one must take time)")
        if self.distribution in ("lognormal", "gamma") and self.cv is None:
            raise ValueError(f"distribution {self.distribution!r} needs cv (coefficient of variation)")
        return self


class ProfileService(Section):
    type: Literal["profile"]
    profile: str = Field(description="A shipped profile name (see `capsim profile list`) or a JSON path.")
    warmed_up: bool = Field(
        default=True,
        description="True: replicas ran warm-up requests, so no first-call cost. False: the first batch "
        "of each size on each replica pays the profile's measured first-call cost.",
    )
    host_overhead: bool = Field(default=True, description="Add the profile's per-batch serving-loop overhead "
                                "(and its dispatch delays, where it has them).")
    speedup: PositiveFloat = Field(default=1.0, description="Divide every service time by this (what-if).")
    idle_effects: bool = Field(
        default=True, description="A batch that starts after its replica sat idle is slowed down as the "
        "profile measured it: its idle_response (from served runs) or else its serving replay (cold caches, "
        "thread wake-up). False: back-to-back times only (the same as server_wait: none).")
    server_wait: Literal[SCENARIO_WAITS] = Field(  # sim.serving.waiting's names
        default="profile", description="How the modelled server waits for work, which decides the idle "
        "response applied: profile = the one the profile was measured under (its server.wait; block when "
        "unrecorded); block or poll = stated, and it must be the profile's; none = no idle response "
        "(back-to-back times).")

    @model_validator(mode="after")
    def _one_idle_choice(self) -> ProfileService:
        if not self.idle_effects and self.server_wait in WAITS:
            raise ValueError(f"idle_effects = false turns the idle response off, but server_wait = "
                             f"{self.server_wait!r} asks for it; give server_wait: none (the same as "
                             "idle_effects: false) or drop idle_effects")
        return self


Service = Annotated[ParametricService | ProfileService, Field(discriminator="type")]
SERVICE_TYPES = union_tags(Service, "type")


# ---------------------------------------------------------------- batching, fleet, slo, cost, run
MAX_REQUESTS = 20_000_000  # default run.max_requests: about 5.4 GB at peak (sim.runner.BYTES_PER_REQUEST)

class Batching(Section):
    max_batch_size: int = Field(default=1, ge=1, le=65536, description="Largest batch a replica runs.")
    max_queue_delay_s: NonNegFloat = Field(
        default=0.0, description="Longest the oldest waiting request is held to grow a batch, seconds."
    )
    preferred_batch_sizes: list[int] = Field(
        default_factory=list, description="Sizes sent as soon as they can be formed (Triton semantics)."
    )
    max_queue_size: int = Field(default=0, ge=0, description="Waiting requests per replica; 0 = unlimited.")
    timeout_s: PositiveFloat | None = Field(
        default=None, description="A request not started within this many seconds is dropped (timed_out)."
    )

    @model_validator(mode="after")
    def _preferred_within_max(self) -> Batching:
        bad = [p for p in self.preferred_batch_sizes if not 1 <= p <= self.max_batch_size]
        if bad:
            raise ValueError(
                f"preferred_batch_sizes {bad} must lie in 1..max_batch_size ({self.max_batch_size})"
            )
        return self


class Fleet(Section):
    replicas: int = Field(default=1, ge=1, le=10000, description="Replicas (one GPU each) behind the router.")
    router: Literal[tuple(ROUTERS)] = Field(  # the router registry's names
        default="round_robin", description="How the router picks a replica for each request."
    )
    instances_per_replica: int = Field(
        default=1, ge=1, le=64, description="Batches one replica runs concurrently (Triton instance_group count)."
    )
    gpu: str | None = Field(default=None, description="GPU type, for labels and catalog prices.")


class SLO(Section):
    latency_s: PositiveFloat = Field(default=0.1, description="Latency objective, seconds.")
    percentile: float = Field(default=99.0, gt=0, lt=100, description="Percentile held to latency_s.")


class Cost(Section):
    usd_per_replica_hour: NonNegFloat = Field(default=0.0, description="Price of one replica (GPU) per hour.")


class Run(Section):
    duration_s: PositiveFloat | None = Field(default=None, description="Simulated arrival horizon, seconds.")
    requests: int | None = Field(default=None, ge=1, description="Or: number of arrivals to simulate.")
    warmup_s: NonNegFloat = Field(default=0.0, description="Requests arriving before this are not measured.")
    seed: int = Field(default=0, ge=0, description="Root seed; each replication spawns its own streams.")
    replications: int = Field(default=1, ge=1, le=1000, description="Independent runs for confidence intervals.")
    sample_interval_s: PositiveFloat | None = Field(
        default=None, description="Time-series sampling period, seconds (default: horizon/600, ≥ 0.01 s)."
    )
    drain_s: NonNegFloat | None = Field(
        default=None, description="After the horizon, how long requests still queued or in service are served "
        "before the run stops, seconds; any left then are recorded as `unfinished`. Default: the horizon's length, at least 60 s.")
    max_requests: int = Field(
        default=MAX_REQUESTS, ge=1, description="Refuse a run expected to draw more arrivals than this (a guard "
        "against a mistyped rate or horizon, checked before anything is drawn); raise it to simulate more.")

    @model_validator(mode="after")
    def _horizon(self) -> Run:  # neither (an offline job's horizon is its own): sim.scenario.architectures
        if self.duration_s is not None and self.requests is not None:
            raise ValueError(f"give duration_s or requests, not both (got duration_s = {self.duration_s}, "
                             f"requests = {self.requests})")
        if self.duration_s is not None and self.warmup_s >= self.duration_s:
            raise ValueError(f"warmup_s ({self.warmup_s}) must be below duration_s ({self.duration_s})")
        return self


class Scenario(Section):
    name: str = Field(default="scenario", description="Label used in tables and file names.")
    description: str = Field(default="", description="Free text.")
    workload: Workload | None = Field(default=None, description="The traffic; required unless the scenario "
                                      "has offline (a batch job's items are all there at submission).")
    service: Service | None = Field(default=None, description="How long a batch takes (request-level "
                                    "serving); `type` picks the kind. Required unless the scenario has llm.")
    batching: Batching = Field(default_factory=Batching)
    fleet: Fleet = Field(default_factory=Fleet)
    slo: SLO = Field(default_factory=SLO)
    cost: Cost = Field(default_factory=Cost)
    run: Run
    autoscaler: Autoscaler = Field(default_factory=Static, description="How the replica count changes; "
                                   "`type` picks static, hpa, kpa, ray_serve or keda (streaming).")
    cold_start: ColdStart = Field(default_factory=ColdStart, description="Phases a new replica goes through.")
    llm: Llm | None = Field(default=None, description="Token-level LLM serving (sim/llm/, docs/llm.md) instead "
                            "of request-level batches.")
    offline: Offline | None = Field(default=None, description="A batch-inference job with a deadline instead of "
                                    "online traffic (sim/architectures/offline.py, docs/architectures.md).")
    streaming: Streaming | None = Field(default=None, description="Event-driven inference: the workload is a "
                                        "producer, the replicas consume a partitioned buffer "
                                        "(sim/architectures/streaming.py, docs/architectures.md).")
    cache: Cache | None = Field(default=None, description="A result cache in front of the model "
                                "(sim/architectures/cache.py, docs/architectures.md).")
    edge: Edge | None = Field(default=None, description="Edge sites beside the central fleet, with network "
                              "round trips (sim/architectures/edge.py, docs/architectures.md).")
    failures: Failures | None = Field(default=None, description="Replica and node failures, retries and restarts "
                                      "(sim/architectures/failures.py, docs/architectures.md).")
    overlap: Overlap | None = Field(default=None, description="Host work overlapped with device work, or the "
                                    "serial loop (sim/architectures/overlap.py, docs/architectures.md).")
    base_dir: str = Field(default=".", exclude=True, description="Directory relative paths resolve from.")

    @model_validator(mode="before")
    @classmethod
    def _disaggregated_fleet(cls, data: Any) -> Any:
        """With llm.disaggregation the fleet is its two pools: fleet.replicas = prefill + decode replicas."""
        llm = data.get("llm") if isinstance(data, dict) else None
        pools = llm.get("disaggregation") if isinstance(llm, dict) else None
        if isinstance(pools, dict):
            p, d = pools.get("prefill_replicas"), pools.get("decode_replicas")
            fleet = data.get("fleet") or {}
            if type(p) is int and type(d) is int and isinstance(fleet, dict):
                data = {**data, "fleet": {**fleet, "replicas": p + d}}
        return data

    @model_validator(mode="after")
    def _one_serving_mode(self) -> Scenario:
        problem = architecture_problem(self)  # online, offline or streaming, consistently
        if problem is None and self.workload is not None:
            problem = llm_problem(self)  # request-level (service) or token-level (llm), consistently
        problem = problem or online_problem(self)  # caches, edge sites, failures, overlap (sim/scenario/online.py)
        if problem:
            raise ValueError(problem)
        return self

    def resolve(self, relative: str) -> Path:
        """A path from the scenario, resolved against the scenario file's directory."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path


def mean_rate_rps(arrivals: object) -> float:
    """Long-run mean arrival rate of a rate-defined process (NaN for traces)."""
    p = arrivals.process  # type: ignore[attr-defined]
    if p in ("poisson", "deterministic", "gamma"):
        return arrivals.rate_rps  # type: ignore[attr-defined]
    if p == "mmpp":
        a = arrivals  # type: ignore[assignment]
        return (a.rate_on_rps * a.mean_on_s + a.rate_off_rps * a.mean_off_s) / (a.mean_on_s + a.mean_off_s)
    if p == "diurnal":
        return arrivals.mean_rps  # type: ignore[attr-defined]
    return math.nan
