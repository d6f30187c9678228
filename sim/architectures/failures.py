"""Replica and node failures: up times, lost or retried requests, restarts that are cold starts.

Each replica that starts taking traffic draws an up time (mean ``replica_mtbf_s``, exponential or Weibull);
when it runs out the replica crashes (:meth:`sim.serving.engine.Engine.fail_replica`): it leaves the router,
and the requests it held, queued or running, are lost or retried. A node holds ``replicas_per_node``
replica slots (slot k on node k // replicas_per_node); a node failure (mean ``node_mtbf_s`` between them,
drawn again from each failure) takes every replica in its slots down at once, starting ones included.
Either way the fleet replaces what failed at once (a Kubernetes ReplicaSet recreating its pods): the
replacement takes the slot and goes through the cold-start phases of ``sim.scaling.lifecycle`` (provisioning,
image pull, weight load, warm-up, readiness probe), so the time to repair is a cold start. With an
autoscaler its own fleet does the replacing; a static fleet gets one here (:class:`StaticFleet`).

Retries (``in_flight: retried``): a lost request is sent again after ``backoff_s × multiplier^(attempt − 1)``,
while it has attempts left and the retry budget allows (retries so far ≤ budget_share × arrivals so far
+ budget_min_retries); its queueing and timeout count from the retry, its latency from its first arrival.
A request given up is recorded as ``rejected`` with ``failed`` true. Failures are drawn over the arrival
horizon (none after it), so a run ends once its work is done.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from sim.architectures.online import Architecture
from sim.results.metrics import slo_violation
from sim.scaling.lifecycle import Fleet, PhaseSampler
from sim.theory.availability import weibull_scale_s


class StaticFleet:
    """A static fleet's replacements: the engine's ``ScalerHooks`` with a fleet that never changes its size."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    @property
    def desired(self) -> int:
        return self.fleet.desired

    def process(self):
        yield from ()

    def on_empty(self) -> None:
        """Every replica is down: the replacements are on their way."""

    def stop(self) -> None:
        pass


class UpTimes:
    """Time to the next failure: exponential or Weibull with the given mean."""

    def __init__(self, spec, rng: np.random.Generator) -> None:
        self.spec, self.rng = spec, rng

    def draw(self, mean_s: float) -> float:
        if self.spec.distribution == "weibull":
            shape = self.spec.weibull_shape
            return float(self.rng.weibull(shape) * weibull_scale_s(mean_s, shape))
        return float(self.rng.exponential(mean_s))


class ReplicaFailures(Architecture):
    """The ``failures`` section."""

    def __init__(self, scenario, arrivals: np.ndarray, rng: np.random.Generator, profile) -> None:
        self.scenario, self.spec = scenario, scenario.failures
        self.arrival_s = arrivals
        replica_rng, node_rng, phase_rng = rng.spawn(3)
        self.replica_up, self.node_up = UpTimes(self.spec, replica_rng), UpTimes(self.spec, node_rng)
        self.phases = PhaseSampler(scenario.cold_start, profile, getattr(scenario.service, "warmed_up", True),
                                   phase_rng)
        self.attempts = np.ones(arrivals.size, dtype=np.int32)
        self.failed = np.zeros(arrivals.size, dtype=bool)
        self.retries = 0
        self.events: list[tuple[float, int, str]] = []  # (time, replica, "replica" | "node")
        self.node_failures: list[float] = []
        self.cut: list[int] = []  # batches cut short
        self.slot_of: dict[int, int] = {}  # replica index -> slot
        self.holder: dict[int, object] = {}  # slot -> the replica in it

    def attach(self, engine, scaler) -> None:
        self.engine, self.env, self.horizon_s = engine, engine.env, engine.horizon_s
        if scaler is None:
            self.fleet = Fleet(engine, self.phases, self.scenario.cold_start.readiness_period_s)
            engine.attach_scaler(StaticFleet(self.fleet))
        else:
            self.fleet = scaler.fleet
        engine.on_ready(self._up)
        for rep in engine.replicas():
            self._up(rep)
        if self.spec.node_mtbf_s is not None:
            auto = self.scenario.autoscaler
            most = self.scenario.fleet.replicas if auto.type == "static" else auto.max_replicas
            for node in range(math.ceil(most / self.spec.replicas_per_node)):
                self.env.process(self._node(node))

    # ------------------------------------------------------------ failing
    def _up(self, rep) -> None:
        """``rep`` takes traffic: give it a slot (the lowest free) and, if replicas fail, its failure time."""
        if rep.index not in self.slot_of:
            slot = next(s for s in range(len(self.holder) + 1)
                        if s not in self.holder or self.holder[s].gone_s is not None)
            self.slot_of[rep.index], self.holder[slot] = slot, rep
        if self.spec.replica_mtbf_s is not None:
            up = self.replica_up.draw(self.spec.replica_mtbf_s)
            if self.env.now + up < self.horizon_s:
                self.env.timeout(up, rep).callbacks.append(self._replica_timer)

    def _replica_timer(self, event) -> None:
        rep = event.value
        if rep.gone_s is None and not rep.draining:  # not retired by the autoscaler meanwhile
            self._fail([rep], "replica")

    def _node(self, node: int):
        per = self.spec.replicas_per_node
        while True:
            up = self.node_up.draw(self.spec.node_mtbf_s)
            if self.env.now + up >= self.horizon_s:
                return
            yield self.env.timeout(up)
            self.node_failures.append(self.env.now)
            slots = range(node * per, (node + 1) * per)
            self._fail([self.holder[s] for s in slots if s in self.holder and self.holder[s].gone_s is None],
                       "node")

    def _fail(self, reps: list, kind: str) -> None:
        now = self.env.now
        replaced = [rep for rep in reps if not rep.draining]  # a draining replica was on its way out
        for rep in reps:
            lost, cut = self.engine.fail_replica(rep)
            rep.gone_s, rep.state = now, "failed"  # the fleet's fields: this is the fleet failing
            self.events.append((now, rep.index, kind))
            self.cut.extend(cut)
            for i in lost:
                self._retry_or_lose(i, rep.index)
        before = len(self.engine.replicas())
        self.fleet.scale_to(self.fleet.desired)  # the replacements cold-start
        for rep, new in zip(replaced, self.engine.replicas()[before:]):
            slot = self.slot_of[rep.index]
            self.slot_of[new.index], self.holder[slot] = slot, new

    def _retry_or_lose(self, i: int, replica: int) -> None:
        spec, attempt = self.spec.retry, int(self.attempts[i])
        arrived = bisect.bisect_right(self.arrival_s, self.env.now)  # (the arrival times are sorted)
        budget = spec.budget_share * arrived + spec.budget_min_retries
        if self.spec.in_flight == "retried" and attempt < spec.max_attempts and self.retries < budget:
            self.attempts[i] = attempt + 1
            self.retries += 1
            delay = spec.backoff_s * spec.backoff_multiplier ** (attempt - 1)
            self.env.timeout(delay, i).callbacks.append(lambda event: self.engine.admit(event.value))
        else:
            self.failed[i] = True
            self.engine.lose(i, replica)

    # ------------------------------------------------------------ records and figures
    def finish(self, raw) -> None:
        raw.extra.setdefault("request_columns", {}).update({"attempts": self.attempts, "failed": self.failed})
        cut = np.zeros(len(raw.batch_start_s), dtype=bool)
        cut[self.cut] = True
        raw.extra.setdefault("batch_columns", {})["failed"] = cut

    def extend(self, summary, requests, batches, timeseries, replicas, window) -> None:
        t0, t1 = window
        ready, gone = replicas["ready_s"].to_numpy(), replicas["gone_s"].to_numpy()
        up_s = float(np.clip(np.minimum(gone, t1) - np.maximum(ready, t0), 0, None).sum())
        auto = self.scenario.autoscaler
        if auto.type == "static":
            wanted_s = self.scenario.fleet.replicas * (t1 - t0)
        else:  # the autoscaler's target, sampled
            t, desired = timeseries["time_s"].to_numpy(), timeseries["desired_replicas"].to_numpy()
            inside = (t > t0) & (t <= t1)
            wanted_s = float(desired[inside].sum() * (t[1] - t[0])) if len(t) > 1 else math.nan
        summary["availability"] = up_s / wanted_s if wanted_s > 0 else math.nan
        times = np.array([e[0] for e in self.events if e[2] == "replica"])
        summary["replica_failures"] = int(((times >= t0) & (times < t1)).sum())
        nodes = np.asarray(self.node_failures)
        summary["node_failures"] = int(((nodes >= t0) & (nodes < t1)).sum())
        arrival = requests["arrival_s"].to_numpy()
        inside = (arrival >= t0) & (arrival < t1)
        summary["requests_failed"] = int(requests["failed"].to_numpy()[inside].sum())
        summary["requests_retried"] = int((requests["attempts"].to_numpy()[inside] > 1).sum())
        sc = self.scenario
        summary["slo_violation_min"] = slo_violation(requests, t0, t1, sc.slo.latency_s, sc.slo.percentile)[
            "slo_violation_min"]
