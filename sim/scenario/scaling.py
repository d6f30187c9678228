"""Scenario sections for autoscaling and cold starts (``autoscaler:`` and ``cold_start:``).

Defaults are those of the real controllers (see docs/autoscaling.md and the reference notes):
Kubernetes HPA (autoscaling/v2), Knative KPA and Ray Serve, and KEDA's Kafka scaler for streaming consumers
(``sim/scaling/keda.py``). ``type: static`` keeps the fleet fixed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from sim.scenario.base import NonNegFloat, PositiveFloat, Section, union_tags


class PhaseTime(Section):
    """A phase duration: ``mean_s`` with optional variability (cv 0 = always mean_s)."""

    mean_s: NonNegFloat = Field(description="Mean duration, seconds.")
    cv: NonNegFloat = Field(default=0.0, description="Coefficient of variation (0 = deterministic).")
    distribution: Literal["lognormal", "gamma"] = Field(default="lognormal", description="Shape when cv > 0.")


Duration = NonNegFloat | PhaseTime


class ColdStart(Section):
    provision_s: Duration = Field(default=2.0, description="Schedule the pod on an existing node, seconds.")
    new_node_probability: float = Field(default=0.0, ge=0, le=1,
                                        description="Chance a new replica needs a new GPU node.")
    new_node_s: Duration = Field(default=100.0, description="Extra time to bring up a new GPU node, seconds.")
    image_pull_s: Duration = Field(default=0.0, description="Pull and extract the serving image, seconds.")
    weight_load_s: Duration | None = Field(
        default=None, description="Runtime start + read weights + copy to device, seconds. Default: from the "
        "profile (weight_bytes / measured load rate + runtime start), else 0.")
    warmup_s: Duration | None = Field(
        default=None, description="Warm-up requests before the server reports up, seconds. Default: the "
        "profile's measured warm-up when service.warmed_up is true, else 0.")
    readiness_period_s: PositiveFloat = Field(
        default=10.0, description="Readiness-probe period: a replica takes traffic at the first probe tick "
        "after its server is up (Kubernetes default 10 s).")


# ---------------------------------------------------------------- HPA
class ScalingPolicy(Section):
    type: Literal["Pods", "Percent"] = Field(description="Pods: absolute count; Percent: of replicas at period start.")
    value: int = Field(gt=0, description="Pods or percent allowed per period.")
    period_s: float = Field(gt=0, le=1800, description="Length of the period, seconds.")


class ScalingRules(Section):
    stabilization_window_s: NonNegFloat | None = Field(
        default=None, description="Window of past recommendations considered (up: min, down: max), seconds.")
    select_policy: Literal["Max", "Min", "Disabled"] = Field(default="Max", description="Which policy limit wins.")
    policies: list[ScalingPolicy] | None = Field(default=None, description="Rate limits (API defaults if absent).")
    tolerance: NonNegFloat | None = Field(default=None, description="Per-direction tolerance (default: the global).")


class Behavior(Section):
    scale_up: ScalingRules = Field(default_factory=ScalingRules)
    scale_down: ScalingRules = Field(default_factory=ScalingRules)


HPA_METRICS = ("gpu_utilization", "requests_per_second", "in_flight", "queue_length", "latency",
               "kv_cache_utilization", "running_sequences")


class HPAMetric(Section):
    type: Literal["resource", "pods", "external", "latency"] = Field(
        description="resource: utilisation of the replica's GPU (busy share); pods: an average per pod; "
        "external: one value for the whole service (KEDA style); latency: a windowed latency percentile.")
    name: Literal["gpu_utilization", "cpu_utilization", "requests_per_second", "in_flight", "queue_length",
                  "latency", "kv_cache_utilization", "running_sequences"] = Field(
        description="What is measured (kv_cache_utilization, running_sequences: pods metrics of llm scenarios).")
    target_utilization: float | None = Field(default=None, gt=0, le=1.5,
                                             description="resource: target busy share (0.7 = 70%).")
    target_average_value: PositiveFloat | None = Field(default=None, description="pods/external: per-pod target.")
    target_value: PositiveFloat | None = Field(default=None, description="external/latency: total target.")
    percentile: float = Field(default=99.0, gt=0, lt=100, description="latency: which percentile.")

    @model_validator(mode="after")
    def _target(self) -> HPAMetric:
        need = {"resource": "target_utilization", "pods": "target_average_value"}.get(self.type)
        if need and getattr(self, need) is None:
            raise ValueError(f"a {self.type} metric needs {need}")
        if self.type in ("external", "latency") and self.target_value is None and self.target_average_value is None:
            raise ValueError(f"a {self.type} metric needs target_value or target_average_value")
        return self


class HPA(Section):
    type: Literal["hpa"]
    min_replicas: int = Field(default=1, ge=1, description="Lower bound (HPA minReplicas).")
    max_replicas: int = Field(ge=1, le=10000, description="Upper bound (HPA maxReplicas).")
    initial_replicas: int | None = Field(default=None, ge=1, description="Ready replicas at t=0 (default min).")
    sync_period_s: PositiveFloat = Field(default=15.0, description="Controller resync period.")
    tolerance: NonNegFloat = Field(default=0.1, description="No change while |ratio - 1| ≤ tolerance.")
    metric_window_s: PositiveFloat = Field(default=15.0, description="Averaging window of the metric pipeline.")
    metric_lag_s: NonNegFloat = Field(default=0.0, description="Age of the newest sample the HPA sees.")
    cpu_initialization_period_s: NonNegFloat = Field(
        default=300.0, description="Utilisation samples of pods started this recently are ignored until one "
        "full window after they became ready.")
    metrics: list[HPAMetric] = Field(min_length=1, description="Each gives a proposal; the largest wins.")
    behavior: Behavior | None = Field(default=None, description="autoscaling/v2 behavior; absent = legacy rules.")
    from_manifest: str | None = Field(default=None, description="(set by the manifest reader) source file.")

    @model_validator(mode="after")
    def _bounds(self) -> HPA:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be ≥ min_replicas ({self.min_replicas})")
        return self


class KPA(Section):
    type: Literal["kpa"]
    min_replicas: int = Field(default=0, ge=0, description="min-scale; 0 allows scale to zero.")
    max_replicas: int = Field(ge=1, le=10000)
    initial_replicas: int | None = Field(default=None, ge=0, description="Ready replicas at t=0 (default max(min,1)).")
    container_concurrency_target: PositiveFloat = Field(default=100.0, description="Target in-flight per pod.")
    target_utilization: float = Field(default=0.7, gt=0, le=1, description="Share of the target aimed for.")
    stable_window_s: PositiveFloat = Field(default=60.0)
    panic_window_percentage: float = Field(default=10.0, gt=0, le=100)
    panic_threshold_percentage: float = Field(default=200.0, gt=100)
    max_scale_up_rate: float = Field(default=1000.0, gt=1)
    max_scale_down_rate: float = Field(default=2.0, gt=1)
    tick_s: PositiveFloat = Field(default=2.0, description="Decision interval.")
    scale_to_zero_grace_s: NonNegFloat = Field(default=30.0)

    @model_validator(mode="after")
    def _bounds(self) -> KPA:
        if self.max_replicas < max(self.min_replicas, 1):
            raise ValueError(f"max_replicas ({self.max_replicas}) must be ≥ min_replicas and ≥ 1")
        return self


class RayServe(Section):
    type: Literal["ray_serve"]
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(ge=1, le=10000)
    initial_replicas: int | None = Field(default=None, ge=0)
    target_ongoing_requests: PositiveFloat = Field(default=2.0)
    upscale_delay_s: NonNegFloat = Field(default=30.0)
    downscale_delay_s: NonNegFloat = Field(default=600.0)
    look_back_period_s: PositiveFloat = Field(default=30.0)
    upscaling_factor: PositiveFloat = Field(default=1.0)
    downscaling_factor: PositiveFloat = Field(default=1.0)
    control_loop_s: PositiveFloat = Field(default=0.1)

    @model_validator(mode="after")
    def _bounds(self) -> RayServe:
        if self.max_replicas < max(self.min_replicas, 1):
            raise ValueError(f"max_replicas ({self.max_replicas}) must be ≥ min_replicas and ≥ 1")
        return self


class Keda(Section):
    """KEDA's Kafka scaler feeding the HPA it creates (streaming scenarios; sim/scaling/keda.py)."""

    type: Literal["keda"]
    min_replicas: int = Field(default=0, ge=0, description="minReplicaCount; 0 lets KEDA scale to zero once no "
                              "partition has lag for cooldown_period_s.")
    max_replicas: int = Field(default=100, ge=1, le=10000, description="maxReplicaCount.")
    initial_replicas: int | None = Field(default=None, ge=0, description="Ready replicas at t=0 (default "
                                         "min_replicas).")
    lag_threshold: int = Field(default=10, ge=1, description="lagThreshold: target lag per replica, events "
                               "(the HPA's AverageValue target).")
    activation_lag_threshold: int = Field(default=0, ge=0, description="activationLagThreshold: KEDA scales "
                                          "from zero when the total lag exceeds this, events.")
    allow_idle_consumers: bool = Field(default=False, description="allowIdleConsumers: false caps the metric at "
                                       "partitions × lag_threshold, so replicas never exceed the partitions.")
    limit_to_partitions_with_lag: bool = Field(default=False, description="limitToPartitionsWithLag: cap at "
                                               "the partitions that have lag instead.")
    polling_interval_s: PositiveFloat = Field(default=30.0, description="pollingInterval: how often KEDA checks "
                                              "activity (scale from and to zero), seconds.")
    cooldown_period_s: NonNegFloat = Field(default=300.0, description="cooldownPeriod: inactivity before "
                                           "scaling to zero (min_replicas 0), seconds.")
    sync_period_s: PositiveFloat = Field(default=15.0, description="The HPA's resync period, seconds.")
    tolerance: NonNegFloat = Field(default=0.1, description="The HPA's tolerance: no change while |ratio - 1| ≤ "
                                   "tolerance.")
    behavior: Behavior | None = Field(default=None, description="The HPA's autoscaling/v2 behavior; absent = the "
                                      "API defaults (KEDA always creates a v2 HPA).")

    @model_validator(mode="after")
    def _bounds(self) -> Keda:
        if self.max_replicas < max(self.min_replicas, 1):
            raise ValueError(f"max_replicas ({self.max_replicas}) must be ≥ min_replicas and ≥ 1")
        return self


class Static(Section):
    type: Literal["static"] = "static"


Autoscaler = Annotated[Static | HPA | KPA | RayServe | Keda, Field(discriminator="type")]
AUTOSCALER_TYPES = union_tags(Autoscaler, "type")
