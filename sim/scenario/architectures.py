"""Scenario sections of the serving architectures beside online serving: ``offline:`` and ``streaming:``.

A scenario with an ``offline`` section is a batch-inference job (``sim.architectures.offline``): its items
are all there when the job is submitted, so it has no ``workload`` and no ``run.duration_s``; it is held to
``offline.deadline_s`` instead of a latency SLO. A scenario with a ``streaming`` section is event-driven
inference (``sim.architectures.streaming``): ``workload.arrivals`` is the producer, the buffer is
``streaming``'s partitions, the replicas are its consumers. Both use ``service``, ``batching.max_batch_size``,
``fleet``, ``cold_start`` and ``cost`` as online serving does. See docs/architectures.md.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from sim.scenario.base import NonNegFloat, PositiveFloat, Section

MAX_JOB_ITEMS = 10**12


class Offline(Section):
    """A batch job: ``items`` (or ``dataset_bytes`` / ``item_bytes``) scored by ``fleet.replicas`` replicas."""

    items: int | None = Field(default=None, ge=1, le=MAX_JOB_ITEMS, description="Items the job scores "
                              "(customers, images, documents); all are there when the job is submitted at 0.")
    dataset_bytes: PositiveFloat | None = Field(default=None, description="Or: the dataset's size, bytes; "
                                                "items = ceil(dataset_bytes / item_bytes).")
    item_bytes: PositiveFloat | None = Field(default=None, description="Size of one item, bytes (with "
                                             "dataset_bytes).")
    deadline_s: PositiveFloat = Field(description="The job must be done this long after it is submitted "
                                      "(cold starts included), seconds.")
    capacity_type: Literal["on_demand", "spot"] = Field(
        default="on_demand", description="on_demand: replicas at cost.usd_per_replica_hour, never interrupted; "
        "spot: at a discount, and reclaimed at random (spot_interruptions_per_hour).")
    spot_discount: float = Field(default=0.6, ge=0, lt=1, description="spot: share of cost.usd_per_replica_hour "
                                 "a spot replica saves (assumed 0.6; set your provider's).")
    spot_interruptions_per_hour: NonNegFloat = Field(
        default=0.01, description="spot: reclaims per replica-hour (a Poisson process, assumed 0.01; set your "
        "provider's). A reclaimed replica loses its batch in flight (done again) and a replacement cold-starts.")

    @model_validator(mode="after")
    def _one_size(self) -> Offline:
        by_bytes = (self.dataset_bytes, self.item_bytes)
        if self.items is not None and any(v is not None for v in by_bytes):
            raise ValueError(f"give items or dataset_bytes with item_bytes, not both (got items = {self.items}, "
                             f"dataset_bytes = {self.dataset_bytes}, item_bytes = {self.item_bytes})")
        if self.items is None and None in by_bytes:
            raise ValueError("give items, or dataset_bytes with item_bytes")
        if self.items is None and self.job_items > MAX_JOB_ITEMS:
            raise ValueError(f"dataset_bytes / item_bytes = {self.job_items:,} items; at most {MAX_JOB_ITEMS:,}")
        return self

    @property
    def job_items(self) -> int:
        """The job's number of items, however it was given."""
        if self.items is not None:
            return self.items
        return max(1, math.ceil(self.dataset_bytes / self.item_bytes - 1e-9))  # type: ignore[operator]


class Streaming(Section):
    """A producer (``workload.arrivals``) writing events into partitions that consumer replicas drain."""

    partitions: int | None = Field(
        default=None, ge=1, le=10000, description="Kafka-like topic partitions, each read by one consumer "
        "(replica) at a time, reassigned when consumers come and go (replicas beyond the partitions sit idle); "
        "null = one shared queue every consumer takes from (SQS, Pub/Sub, a Redis list).")
    partition_capacity_events: int = Field(
        default=0, ge=0, description="Events one partition (or the shared queue) holds, not yet taken by a "
        "consumer, before the producer meets backpressure; 0 = unbounded.")
    backpressure: Literal["block", "drop"] = Field(
        default="block", description="At a full partition: block = the producer waits until a consumer takes an "
        "event (its stall time is measured, later events wait behind it); drop = the event is lost (counted).")
    partitioner: Literal["round_robin", "random"] = Field(
        default="round_robin", description="How the producer picks each event's partition.")
    commit_interval_s: NonNegFloat = Field(
        default=5.0, description="Consumers commit their offsets this often (Kafka's auto.commit.interval.ms, "
        "5 s by default; Flink's Kafka source commits on checkpoints), seconds; 0 = after every batch. Lag counts "
        "the events written and not yet committed. A shared queue acknowledges every batch when it is done.")
    checkpoint_interval_s: PositiveFloat | None = Field(
        default=None, description="Every this many seconds each consumer checkpoints its state (Flink-style); "
        "null = never.")
    checkpoint_pause_s: NonNegFloat = Field(
        default=0.0, description="How long a checkpoint stops a consumer, seconds; the pause starts when its "
        "batch in flight ends and costs service time.")

    @model_validator(mode="after")
    def _checkpoints(self) -> Streaming:
        if self.checkpoint_pause_s and self.checkpoint_interval_s is None:
            raise ValueError(f"checkpoint_pause_s = {self.checkpoint_pause_s:g} needs checkpoint_interval_s")
        if self.checkpoint_interval_s is not None and self.checkpoint_pause_s >= self.checkpoint_interval_s:
            raise ValueError(f"checkpoint_pause_s ({self.checkpoint_pause_s:g}) must be below "
                             f"checkpoint_interval_s ({self.checkpoint_interval_s:g})")
        return self


def _changed(section) -> bool:
    return section.model_dump() != type(section)().model_dump()


def architecture_problem(scenario) -> str | None:
    """What makes ``scenario`` inconsistent as an offline job, a streaming pipeline or online serving
    (None if nothing). Keys an architecture does not read are refused, never silently ignored."""
    offline, streaming, run = scenario.offline, scenario.streaming, scenario.run
    if offline is not None and streaming is not None:
        return "offline, streaming: a scenario is one architecture; give one of the two sections"
    mode = "offline" if offline is not None else "streaming" if streaming is not None else None
    if mode is not None and scenario.llm is not None:
        return f"llm: token-level serving is simulated online only; remove llm or {mode}"
    if scenario.autoscaler.type == "keda" and mode != "streaming":
        return ("autoscaler.type = 'keda': KEDA's Kafka scaler reads consumer lag, which only a streaming "
                "scenario has (a streaming section)")
    if mode == "offline":
        return _offline_problem(scenario)
    if scenario.workload is None:
        return "workload: missing required key (the arrival process)"
    if run.duration_s is None and run.requests is None:
        return "run: give duration_s or requests"
    return _streaming_problem(scenario) if mode == "streaming" else None


def _offline_problem(scenario) -> str | None:
    run = scenario.run
    if scenario.service is None:
        return "service: missing required key (how long a batch of items takes)"
    if scenario.workload is not None:
        return ("workload: an offline job has no arrivals (its items are all there when it is submitted: "
                "offline.items); remove it")
    for key in ("duration_s", "requests"):
        if getattr(run, key) is not None:
            return (f"run.{key} = {getattr(run, key)}: an offline job runs until its last item is done; "
                    "remove it (offline.deadline_s is the time it must take at most)")
    for key in ("warmup_s", "drain_s"):
        if getattr(run, key):
            return f"run.{key} = {getattr(run, key)}: does not apply to an offline job; remove it"
    if scenario.autoscaler.type != "static":
        return (f"autoscaler.type = {scenario.autoscaler.type!r}: an offline job runs a fixed fleet "
                "(fleet.replicas); remove the autoscaler")
    batching = scenario.batching
    if _changed(batching.model_copy(update={"max_batch_size": 1})):
        return ("batching: an offline job reads only batching.max_batch_size (every batch is full but the last); "
                "remove the other batching keys")
    if scenario.fleet.instances_per_replica != 1 or scenario.fleet.router != "round_robin":
        return ("fleet: an offline job reads fleet.replicas and fleet.gpu (replicas take the next batch from one "
                "work queue); remove instances_per_replica and router")
    if _changed(scenario.slo):
        return "slo: an offline job is held to offline.deadline_s, not a latency objective; remove slo"
    return None


def _streaming_problem(scenario) -> str | None:
    spec, fleet = scenario.autoscaler, scenario.fleet
    if spec.type not in ("static", "keda"):
        return (f"autoscaler.type = {spec.type!r}: streaming consumers scale with type static or keda "
                "(KEDA's Kafka lag scaler)")
    if fleet.instances_per_replica != 1 or fleet.router != "round_robin":
        return ("fleet: streaming consumers read fleet.replicas and fleet.gpu (the partitions decide who reads "
                "what); remove instances_per_replica and router")
    if scenario.batching.max_queue_size or scenario.batching.timeout_s is not None:
        return ("batching: streaming bounds the buffer with streaming.partition_capacity_events; remove "
                "max_queue_size and timeout_s")
    partitions = scenario.streaming.partitions
    if spec.type == "keda" and partitions is None and (spec.allow_idle_consumers or spec.limit_to_partitions_with_lag):
        return ("autoscaler: allow_idle_consumers and limit_to_partitions_with_lag are about partitions; "
                "give streaming.partitions or remove them")
    return None
