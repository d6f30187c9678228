"""Streaming inference: a producer, a bounded partitioned buffer, consumer replicas, checkpoints, lag.

The producer replays ``workload.arrivals`` (any arrival process: bursty, diurnal, a trace) and writes each
event to a partition (``streaming.partitioner``). A partition holds at most
``streaming.partition_capacity_events`` events not yet taken by a consumer; at a full one the producer
either blocks (``backpressure: block``: it waits for space, and every later event waits behind it; the
stall is measured) or loses the event (``drop``: the event's outcome is ``rejected``). Each partition is read
by one ready consumer, partitions dealt round robin over the consumers in index order and dealt again
whenever one comes or goes (its events move with it); ``partitions: null`` is one shared queue every
consumer takes from. A free consumer forms a batch from its partitions, oldest events first, by Triton's
rule (``sim.serving.batching``: ``max_batch_size`` at once, else what waits once the oldest has waited
``max_queue_delay_s``), runs it for a service time from ``sim.serving.service`` and commits it. Every
``checkpoint_interval_s`` each consumer pauses ``checkpoint_pause_s`` once its batch in flight ends.

Consumer lag is what Kafka reports (``sim.architectures.topic``): events written minus events committed, per
partition (events in flight count), and in seconds the age of the oldest uncommitted event. A consumer
commits the offsets of its partitions every ``commit_interval_s`` (Kafka's auto-commit; consumers at
staggered phases, so that their commits do not all fall on one instant) and when a rebalance takes
partitions away; with 0, after every batch.

Replicas come and go through ``sim.scaling`` (``Fleet``, ``Scaler``) driven by ``sim.scaling.keda``; this
class keeps the engine's contract for them (``add_replica``, ``mark_ready``, ``stop_routing``,
``ready_count``, ``replicas``, ``snapshot``, ``attach_scaler``). Records are those of online serving
(``sim.results.records``): one ``requests`` row per event.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import simpy

from sim.architectures.topic import Topic
from sim.results.metrics import summarize
from sim.results.records import REJECTED, SERVED, UNFINISHED, RawRecords, to_frames
from sim.results.timeline import enrich_timeseries
from sim.scaling.keda import KedaController
from sim.scaling.lifecycle import Fleet, PhaseSampler
from sim.scaling.monitor import Monitor
from sim.scaling.scaler import Scaler
from sim.scenario.model import mean_rate_rps
from sim.serving.batching import BatchPolicy
from sim.serving.engine import EPS_S, Replica
from sim.serving.service import build_service
from sim.theory.architectures import checkpoint_share
from sim.theory.queueing import batching_capacity_rps

SERIES = ("time_s", "lag_events", "lag_s", "buffered_events", "in_service", "busy_replicas", "ready_replicas",
          "loading_replicas", "paused_replicas", "desired_replicas", "billed_replicas", "producer_blocked",
          "producer_stall_s", "events_dropped")


def initial_consumers(scenario) -> int:
    """Consumers ready at 0: the fleet, or KEDA's ``initial_replicas`` (default ``min_replicas``)."""
    spec = scenario.autoscaler
    if spec.type == "static":
        return scenario.fleet.replicas
    return spec.initial_replicas if spec.initial_replicas is not None else spec.min_replicas


class Stream:
    """One replication of a stream, on SimPy (see the module docstring); the buffer is a :class:`Topic`."""

    def __init__(self, scenario, arrival_s: np.ndarray, service, partition_rng: np.random.Generator, *,
                 sample_interval_s: float, horizon_s: float, stop_s: float) -> None:
        st = scenario.streaming
        self.env = simpy.Environment()
        self.arrival_s, self._at, self.n = arrival_s, arrival_s.tolist(), arrival_s.size
        self.topic = Topic(self.n, st.partitions, st.partition_capacity_events, st.commit_interval_s)
        self.service, self.partition_rng = service, partition_rng
        self.policy = BatchPolicy.from_scenario(scenario.batching)
        self.warm = getattr(scenario.service, "warmed_up", True)
        self.horizon_s, self.stop_s, self.dt = horizon_s, max(stop_s, horizon_s), sample_interval_s
        self.block, self.round_robin = st.backpressure == "block", st.partitioner == "round_robin"
        self.checkpoint_s, self.pause_s = st.checkpoint_interval_s, st.checkpoint_pause_s
        self._replicas = [Replica(k, 1) for k in range(initial_consumers(scenario))]
        self._ready = list(self._replicas)
        self._when_idle: dict[int, Callable[[Replica], None]] = {}
        self._scaler = None
        self._halt = self.env.event()
        self._halt.callbacks.append(simpy.core.StopSimulation.callback)
        self.done = False
        self._batch_of = [-1] * self.n
        self._outcome = [SERVED] * self.n
        self._drop_s: dict[int, float] = {}
        self.finished = 0
        self._next_part = 0
        self._space: simpy.Event | None = None  # succeeds when the partition the producer waits on has room
        self.blocked_on: int | None = None
        self.blocked_since = self.stall_s = 0.0
        self.dropped = self.checkpoints = 0
        self.in_flight: dict[int, list[int]] = {}
        self.paused_until: dict[int, float] = {}
        self.due: set[int] = set()  # consumers that pause for a checkpoint once their batch is done
        self.paused_s = 0.0
        self._log: dict[str, list] = {k: [] for k in ("replica", "start_s", "end_s", "size", "first_call")}
        self._series: dict[str, list[float]] = {k: [] for k in SERIES}
        self.rebalance()

    # ------------------------------------------------------------ the contract with the fleet and the scaler
    def replicas(self) -> tuple[Replica, ...]:
        return tuple(self._replicas)

    def ready_count(self) -> int:
        return len(self._ready)

    def add_replica(self, created_s: float) -> Replica:
        rep = Replica(len(self._replicas), 1, created_s=created_s, ready_s=math.inf)
        self._replicas.append(rep)
        return rep

    def mark_ready(self, rep: Replica) -> None:
        rep.last_change = self.env.now
        self._ready.append(rep)
        self.rebalance()
        if self.topic.commit_s:
            self._schedule_commit(rep)

    def stop_routing(self, rep: Replica, when_idle: Callable[[Replica], None]) -> None:
        """The consumer leaves the group: its partitions go to the others; ``when_idle`` once its batch is done."""
        self._ready.remove(rep)
        self.rebalance()
        if rep.index in self.in_flight:
            self._when_idle[rep.index] = when_idle
        else:
            when_idle(rep)

    def snapshot(self) -> tuple[dict[int, tuple[float, int, int, int]], int]:
        now = self.env.now
        per = {r.index: (r.busy_instance_s(now), r.arrived, r.outstanding, self.topic.pending(r))
               for r in self._replicas if r.gone_s is None and r.state in ("ready", "draining")}
        return per, 0

    def attach_scaler(self, scaler) -> None:
        self._scaler = scaler

    def partition_lags(self) -> list[int]:
        return self.topic.lags()

    def rebalance(self) -> None:
        """Deal the partitions over the ready consumers, then let the free ones start."""
        self.topic.assign(self._ready)
        for rep in self._ready:
            self.dispatch(rep)

    # ------------------------------------------------------------ processes
    def run(self) -> RawRecords:
        self.env.process(self._producer())
        self.env.process(self._sampler())
        if self.checkpoint_s:
            self.env.process(self._checkpoints())
        if self.topic.commit_s:
            for rep in self._ready:
                self._schedule_commit(rep)
        if self._scaler is not None:
            self.env.process(self._scaler.process())
        self.env.run()
        return self._records()

    def _producer(self):
        env, topic = self.env, self.topic
        for i, t in enumerate(self._at):
            if t > env.now:
                yield env.timeout(t - env.now)
            p = self._partition()
            if topic.full(p):
                if not self.block:
                    self._outcome[i], self._drop_s[i] = REJECTED, env.now
                    self.finished += 1
                    self.dropped += 1
                    continue
                self.blocked_on, self.blocked_since = p, env.now
                while topic.full(p):
                    self._space = env.event()
                    yield self._space
                self.stall_s += env.now - self.blocked_since
                self.blocked_on = None
            for rep in topic.write(i, p, env.now):
                if rep.free:
                    self.dispatch(rep)
                    break

    def _partition(self) -> int:
        n = len(self.topic)
        if n == 1:
            return 0
        if self.round_robin:
            p, self._next_part = self._next_part, (self._next_part + 1) % n
            return p
        return int(self.partition_rng.integers(n))

    def _schedule_commit(self, rep: Replica) -> None:
        """The consumer's auto-commits: every ``commit_s`` from a phase set by its index (a golden-ratio spread,
        so that no two consumers, nor the scaler's whole-second ticks, share an instant)."""
        phase = self.topic.commit_s * (((rep.index + 1) * 0.6180339887498949) % 1.0)
        self.env.timeout(phase, rep).callbacks.append(self._commit)

    def _commit(self, event) -> None:
        rep = event.value
        if self.done or rep.gone_s is not None or rep.draining:
            return
        self.topic.commit(rep)
        self.env.timeout(self.topic.commit_s, rep).callbacks.append(self._commit)

    def _checkpoints(self):
        while not self.done:
            yield self.env.timeout(self.checkpoint_s)
            self.checkpoints += 1
            for rep in self._ready:
                if rep.index in self.in_flight:
                    self.due.add(rep.index)
                else:
                    self._pause(rep)

    def _pause(self, rep: Replica) -> None:
        self.paused_until[rep.index] = self.env.now + self.pause_s
        self.paused_s += self.pause_s
        self.env.timeout(self.pause_s, rep).callbacks.append(lambda ev: self.dispatch(ev.value))

    def _sampler(self):
        env, series, topic = self.env, self._series, self.topic
        while True:
            now = env.now
            live = [r for r in self._replicas if r.gone_s is None]
            values = (now, sum(topic.lags()), topic.lag_s(now, self.arrival_s), topic.buffered(),
                      sum(len(b) for b in self.in_flight.values()), len(self.in_flight), len(self._ready),
                      sum(1 for r in live if r.state not in ("ready", "draining")),
                      sum(1 for r in self._ready if self.paused_until.get(r.index, -1.0) > now + EPS_S),
                      self._scaler.desired if self._scaler else len(self._replicas), len(live),
                      float(self.blocked_on is not None),
                      self.stall_s + (now - self.blocked_since if self.blocked_on is not None else 0.0), self.dropped)
            for key, value in zip(SERIES, values):
                series[key].append(value)
            if self.finished >= self.n and now >= self.horizon_s:
                self._finish()
                return
            if now >= self.stop_s:
                self._finish()
                self._halt.succeed()
                return
            yield env.timeout(min(self.dt, self.stop_s - now))

    def _finish(self) -> None:
        self.done = True
        if self._scaler is not None:
            self._scaler.stop()

    # ------------------------------------------------------------ consumers
    def dispatch(self, rep: Replica) -> None:
        """Start a batch on a free, unpaused consumer when its partitions hold enough (Triton's rule)."""
        now, topic = self.env.now, self.topic
        if not rep.free or rep.index not in topic.owned or self.paused_until.get(rep.index, -1.0) > now + EPS_S:
            return
        n = topic.pending(rep)
        if n == 0:
            return
        policy = self.policy
        size = policy.size_now[n] if n <= policy.max_batch_size else policy.size_now[-1]
        if not size:
            deadline = topic.oldest(rep)[1] + policy.max_queue_delay_s
            if now + EPS_S < deadline:
                if rep.timer_at != deadline:
                    rep.timer_at = deadline
                    self.env.timeout(deadline - now, rep).callbacks.append(lambda ev: self.dispatch(ev.value))
                return
            size = min(n, policy.max_batch_size)
        self._start(rep, size, now)

    def _start(self, rep: Replica, size: int, now: float) -> None:
        batch = self.topic.take(rep, size)
        if self.blocked_on is not None and self._space is not None and not self._space.triggered \
                and not self.topic.full(self.blocked_on):
            self._space.succeed()
        service_s = self.service.draw(size, now - rep.last_change, now, rep.index)
        first = not self.warm and size not in rep.seen
        if first:
            rep.seen.add(size)
            service_s += self.service.first_call_extra_s(size)
        bid = len(self._log["start_s"])
        for i in batch:
            self._batch_of[i] = bid
        for key, value in (("replica", rep.index), ("start_s", now), ("end_s", now + service_s), ("size", size),
                           ("first_call", first)):
            self._log[key].append(value)
        rep.last_change, rep.free = now, 0
        rep.outstanding += size
        rep.arrived += size
        self.in_flight[rep.index] = batch
        self.env.timeout(service_s, rep).callbacks.append(self._done)

    def _done(self, event) -> None:
        rep, now = event.value, self.env.now
        batch = self.in_flight.pop(rep.index)
        self.topic.done(batch)
        self.finished += len(batch)
        rep.busy_accum += now - rep.last_change
        rep.last_change, rep.free = now, 1
        rep.outstanding -= len(batch)
        if rep.index in self._when_idle:
            self._when_idle.pop(rep.index)(rep)
        elif rep.index in self.due:
            self.due.discard(rep.index)
            self._pause(rep)
        else:
            self.dispatch(rep)

    # ------------------------------------------------------------ output
    def _records(self) -> RawRecords:
        end_s = self.env.now
        for rep in self._replicas:
            if rep.gone_s is None:
                rep.gone_s = max(end_s, self.horizon_s)
        batch_of = np.asarray(self._batch_of, dtype=np.int64)
        batch_end = np.asarray(self._log["end_s"], dtype=float)
        outcome = np.asarray(self._outcome, dtype=np.int8)
        if self.finished < self.n:  # stopped by the drain limit: never taken, or still in service
            started = batch_of >= 0
            running = np.zeros(self.n, dtype=bool)
            running[started] = batch_end[batch_of[started]] > end_s + EPS_S
            outcome[(outcome == SERVED) & (~started | running)] = UNFINISHED
        drop = np.full(self.n, np.nan)
        if self._drop_s:
            drop[list(self._drop_s)] = list(self._drop_s.values())
        return RawRecords(
            arrival_s=self.arrival_s, batch_of=batch_of, outcome=outcome, drop_s=drop,
            drop_replica=np.full(self.n, -1, dtype=np.int32),
            batch_replica=np.asarray(self._log["replica"], dtype=np.int32),
            batch_start_s=np.asarray(self._log["start_s"], dtype=float), batch_end_s=batch_end,
            batch_size=np.asarray(self._log["size"], dtype=np.int32),
            batch_first_call=np.asarray(self._log["first_call"], dtype=bool),
            timeseries={k: np.asarray(v, dtype=float) for k, v in self._series.items()},
            replicas=self._replicas, horizon_s=self.horizon_s, end_s=end_s,
            extra={"checkpoints": self.checkpoints, "paused_s": self.paused_s, "stall_s": self.stall_s,
                   "dropped": self.dropped})


# ---------------------------------------------------------------- one replication
def attach_keda(stream: Stream, scenario, rng: np.random.Generator, profile=None) -> Scaler | None:
    """Give a stream KEDA's controller and the shared fleet lifecycle (None for a static fleet)."""
    spec = scenario.autoscaler
    if spec.type != "keda":
        return None
    warmed = getattr(scenario.service, "warmed_up", True)
    fleet = Fleet(stream, PhaseSampler(scenario.cold_start, profile, warmed, rng), scenario.cold_start.readiness_period_s)
    controller = KedaController(spec, stream.partition_lags, scenario.streaming.partitions)
    scaler = Scaler(stream.env, controller, fleet, Monitor(stream.snapshot, controller.period_s, 5.0))
    stream.attach_scaler(scaler)
    return scaler


def stream_capacity_events_per_s(scenario, service) -> float:
    """Most events/s the consumers can process: each (at most one per partition) running its most efficient
    batch back to back, less the checkpoint pauses (``sim.theory.architectures.checkpoint_share``)."""
    spec, st = scenario.autoscaler, scenario.streaming
    consumers = scenario.fleet.replicas if spec.type == "static" else spec.max_replicas
    if st.partitions is not None:
        consumers = min(consumers, st.partitions)
    full = batching_capacity_rps(service.mean_s, scenario.batching.max_batch_size, consumers, 1)
    return full * checkpoint_share(st.checkpoint_interval_s, st.checkpoint_pause_s)


def run_stream_once(scenario, arrivals: np.ndarray, rng: dict[str, np.random.Generator], *, horizon_s: float,
                    stop_s: float, interval_s: float):
    """(requests, batches, timeseries, replicas, summary) of one replication; requests are the events."""
    service = build_service(scenario, rng["service"])
    stream = Stream(scenario, arrivals, service, rng["routing"], sample_interval_s=interval_s, horizon_s=horizon_s,
                    stop_s=stop_s)
    attach_keda(stream, scenario, rng["lifecycle"], getattr(service, "profile", None))
    raw = stream.run()
    requests, batches, timeseries, replicas = to_frames(raw)
    timeseries = enrich_timeseries(timeseries, requests, batches, replicas, scenario, interval_s)
    st, run = scenario.streaming, scenario.run
    summary = summarize(
        requests, batches, replicas, warmup_s=run.warmup_s, horizon_s=horizon_s,
        slo_latency_s=scenario.slo.latency_s, slo_percentile=scenario.slo.percentile,
        usd_per_replica_hour=scenario.cost.usd_per_replica_hour,
        offered_rps=mean_rate_rps(scenario.workload.arrivals),
        capacity_rps=stream_capacity_events_per_s(scenario, service),
        queue_bounded=bool(st.partition_capacity_events and st.backpressure == "drop"))
    summary.update(stream_summary(timeseries, raw.extra, warmup_s=run.warmup_s, horizon_s=horizon_s))
    return requests, batches, timeseries, replicas, summary


def stream_summary(timeseries: pd.DataFrame, extra: dict, *, warmup_s: float, horizon_s: float) -> dict:
    """Lag, backpressure and checkpoint figures of one run (keys as in summary.json, docs/results.md): lag
    statistics over the samples in [warmup_s, horizon_s]; its growth is the slope of a line fitted to the
    samples of the second half of that window, events per second."""
    t = timeseries["time_s"].to_numpy()
    inside = (t >= warmup_s) & (t <= horizon_s + EPS_S)
    lag, lag_s = timeseries["lag_events"].to_numpy()[inside], timeseries["lag_s"].to_numpy()[inside]
    late = inside & (t >= (warmup_s + horizon_s) / 2)
    growth = (float(np.polyfit(t[late], timeseries["lag_events"].to_numpy()[late], 1)[0])
              if late.sum() > 1 else math.nan)
    window = horizon_s - warmup_s
    return {
        "lag_events_mean": float(lag.mean()) if lag.size else math.nan,
        "lag_events_max": float(lag.max()) if lag.size else math.nan,
        "lag_events_end": float(lag[-1]) if lag.size else math.nan,
        "lag_s_mean": float(lag_s.mean()) if lag_s.size else math.nan,
        "lag_s_max": float(lag_s.max()) if lag_s.size else math.nan,
        "lag_growth_events_per_s": growth,
        "producer_stall_s": float(extra["stall_s"]),
        "producer_stall_share": float(extra["stall_s"]) / window if window > 0 else math.nan,
        "events_dropped": int(extra["dropped"]),
        "checkpoints": int(extra["checkpoints"]),
        "checkpoint_pause_s": float(extra["paused_s"]),
        "consumers_max": float(timeseries["ready_replicas"].max()),
    }
