"""The discrete-event model of serving, on SimPy.

One SimPy process replays the pre-drawn arrival times; everything else is event callbacks, which
keeps a request to a handful of Python operations. Per replica: a FIFO queue, a Triton-style dynamic
batcher and ``instances_per_replica`` execution slots. Timeline of one request::

    arrive -> router picks a ready replica -> rejected (queue full) | queued
    queued -> dropped at arrival + timeout_s if not started (timed_out) | starts in a batch
    batch  -> service time drawn for its size (+ first-call cost on a cold replica) -> served

After the arrival horizon the engine serves what is still queued until ``stop_s`` (the horizon plus
``run.drain_s``) at most; a request neither finished nor dropped by then is ``unfinished``. The time
series is sampled every ``sample_interval_s`` until then, so a run's size is bounded however slow its
service.

Records are flat arrays indexed by request id; batches are a flat log (``sim.results.records``).
Nothing here computes metrics: see ``sim.results.metrics``.

The engine's contract with its neighbours (the fleet lifecycle and the autoscaler in ``sim.scaling``)
is the public methods below, never its fields:

* :meth:`Engine.add_replica` registers a starting replica (it takes no traffic yet);
  :meth:`Engine.mark_ready` starts routing to it and releases requests held at the activator;
  :meth:`Engine.stop_routing` drains it: no new requests, and ``when_idle(replica)`` is called once
  its queued and running work is done; :meth:`Engine.ready_count` and :meth:`Engine.replicas`
  (a read-only view) tell the fleet what there is.
* :meth:`Engine.snapshot` gives the monitor each replica's counters (expired requests settled first);
  :meth:`Engine.latency_log` turns on the (end, latency) log a latency metric reads.
* :meth:`Engine.attach_scaler` hands over a :class:`ScalerHooks`: its ``process()`` runs beside the
  arrivals, ``desired`` is sampled into the time series, ``on_empty()`` is called when a request
  arrives with no ready replica, ``stop()`` when every request has finished after the horizon.

The online architectures (``sim.architectures``) use a second set: :meth:`Engine.attach_front` (arrivals go
to a cache or the edge's network first, which then call :meth:`Engine.admit` or
:meth:`Engine.answer_without_model`), :meth:`Engine.ready_replicas`, the listeners :meth:`Engine.on_batch_done`
and :meth:`Engine.on_ready`, and :meth:`Engine.fail_replica` and :meth:`Engine.lose` for failures.

The fleet owns a :class:`Replica`'s lifecycle fields (state and its timestamps); the engine owns its
queue and busy accounting.

Speed: the engine moves SimPy's clock itself for arrivals that precede every scheduled event and reads
a timeout's value from ``event._value``; both are SimPy 4 internals, so ``simpy`` is pinned below 5
and ``tests/test_engine_contract.py`` checks the assumptions.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import simpy

from sim.results.records import REJECTED, SERVED, TIMED_OUT, UNFINISHED, RawRecords
from sim.serving.batching import BatchPolicy

EPS_S = 1e-9  # clock comparisons: timers land within float rounding of their deadline


class Replica:
    """One model server: a queue, a batcher's timer and its execution slots.

    The engine owns ``queue``, ``free``, ``outstanding``, ``timer_at``, ``seen``, ``busy_accum``,
    ``last_change`` and ``arrived``; the fleet owns the lifecycle: ``state``, ``created_s``,
    ``container_s``, ``up_s``, ``ready_s``, ``gone_s`` and ``draining``."""

    __slots__ = ("index", "queue", "instances", "free", "outstanding", "timer_at", "seen", "created_s",
                 "ready_s", "gone_s", "draining", "state", "busy_accum", "last_change", "arrived", "up_s",
                 "container_s")

    def __init__(self, index: int, instances: int, created_s: float = 0.0, ready_s: float = 0.0) -> None:
        self.index = index
        self.queue: deque[int] = deque()
        self.instances = instances
        self.free = instances
        self.outstanding = 0  # queued + in service: what least-outstanding routers read
        self.timer_at = -math.inf
        self.seen: set[int] = set()  # batch sizes this replica has run (first-call cost)
        self.created_s = created_s
        self.ready_s = ready_s
        self.gone_s: float | None = None
        self.draining = False
        self.state = "ready"  # provisioning -> pulling -> loading -> warming -> ready -> draining -> gone
        self.up_s = ready_s  # server up (before the readiness probe notices)
        self.container_s = created_s  # container started (readiness probes tick from here)
        self.busy_accum = 0.0  # instance-seconds busy up to last_change
        self.last_change = created_s
        self.arrived = 0  # requests routed here (for per-pod request rates)

    def busy_instance_s(self, now: float) -> float:
        """Cumulative busy instance-seconds up to ``now`` (utilisation metrics difference these)."""
        return self.busy_accum + (self.instances - self.free) * (now - self.last_change)

    @property
    def busy(self) -> bool:
        return self.free < self.instances


class ScalerHooks(Protocol):
    """What the engine needs from an attached autoscaler (``sim.scaling.scaler.Scaler``)."""

    desired: int

    def process(self) -> Iterator: ...

    def on_empty(self) -> None: ...

    def stop(self) -> None: ...


def replay_arrivals(env: simpy.Environment, at: list[float], arrive: Callable[[int], None]) -> Iterator:
    """The SimPy process that calls ``arrive(i)`` at each time ``at[i]`` (ascending), for both engines.
    An arrival strictly before every scheduled event needs no event of its own: nothing else can happen
    in between, so the clock moves straight to it (about 40% of engine time saved; records are
    identical). Ties still go through the event queue, in FIFO order."""
    timeout, peek = env.timeout, env.peek
    for i, t in enumerate(at):
        if t > env._now:
            if t < peek():
                env._now = t
            else:
                yield timeout(t - env._now)
        arrive(i)


def initial_replicas(scenario) -> int:
    """Replicas ready at t=0: the fleet size, or the autoscaler's initial / minimum count."""
    spec = scenario.autoscaler
    if spec.type == "static":
        return scenario.fleet.replicas
    if spec.initial_replicas is not None:
        return spec.initial_replicas
    return max(spec.min_replicas, 1) if spec.type != "hpa" else spec.min_replicas


class FleetContract:
    """The contract both engines (this one and ``sim.llm.engine``) keep with the fleet lifecycle, the
    monitor and the scalers: the replicas, which take traffic, and the drain. An engine sets the fields
    in :meth:`_start_fleet`, makes its own replicas in :meth:`_new_replica`, routes in ``_route``, counts a
    replica's work in ``outstanding``, and has the processes ``_source`` and ``_sampler`` and the
    ``_records`` that :meth:`run` returns; ``n``, ``finished``, ``horizon_s``, ``stop_s`` and the ``_halt``
    event tell :meth:`_sampling_over` when the run ends."""

    env: simpy.Environment

    def _start_fleet(self, replicas: list) -> None:
        self._replicas = replicas
        self._ready = list(replicas)  # replicas taking traffic, in the router's order
        self._held: list[int] = []  # requests waiting at the activator while no replica is ready
        self._scaler: ScalerHooks | None = None
        self._when_idle: dict[int, Callable[[Replica], None]] = {}  # draining replica -> its callback
        self._latency_log: list[tuple[float, float]] | None = None  # (end_s, latency_s), when a metric reads it
        self._ready_listeners: list[Callable[[Replica], None]] = []

    def _new_replica(self, index: int, created_s: float) -> Replica:
        raise NotImplementedError

    def _route(self, i: int) -> None:
        raise NotImplementedError

    def _arrive(self, i: int) -> None:
        if not self._ready:  # scaled to zero or all replicas gone: held at the activator
            self._held.append(i)
            if self._scaler is not None:
                self._scaler.on_empty()
            return
        self._route(i)

    def _sampling_over(self) -> bool:
        """After a sample: whether the run is over, every request finished past the horizon, or the drain
        limit reached (what is still queued or running is unfinished; the run halts)."""
        env = self.env
        if self.finished >= self.n and env.now >= self.horizon_s:
            if self._scaler is not None:
                self._scaler.stop()
            return True
        if env.now >= self.stop_s:
            if self._scaler is not None:
                self._scaler.stop()
            self._halt.succeed()
            return True
        return False

    def replicas(self) -> tuple[Replica, ...]:
        """Every replica so far, starting, ready, draining or gone (read-only view)."""
        return tuple(self._replicas)

    def ready_count(self) -> int:
        """Replicas taking traffic."""
        return len(self._ready)

    def add_replica(self, created_s: float) -> Replica:
        """Register a new replica, starting at ``created_s``; it takes no traffic until :meth:`mark_ready`."""
        rep = self._new_replica(len(self._replicas), created_s)
        self._replicas.append(rep)
        return rep

    def mark_ready(self, rep: Replica) -> None:
        """Start routing to ``rep`` and route the requests held at the activator to the fleet, oldest first."""
        rep.last_change = self.env.now
        self._ready.append(rep)
        held, self._held = self._held, []
        for i in held:
            self._route(i)
        for listener in self._ready_listeners:
            listener(rep)

    def stop_routing(self, rep: Replica, when_idle: Callable[[Replica], None]) -> None:
        """No new requests for ``rep``; ``when_idle(rep)`` once its queued and running work is done
        (at once if it has none)."""
        self._ready.remove(rep)
        if rep.outstanding == 0:
            when_idle(rep)
        else:
            self._when_idle[rep.index] = when_idle

    def latency_log(self) -> list[tuple[float, float]]:
        """The (end_s, latency_s) of every served request from now on, in completion order."""
        if self._latency_log is None:
            self._latency_log = []
        return self._latency_log

    def attach_scaler(self, scaler: ScalerHooks) -> None:
        """Let ``scaler`` run beside the arrivals (see :class:`ScalerHooks`); before :meth:`run`."""
        self._scaler = scaler

    def run(self):
        """Replay the arrivals beside the sampler (and the scaler, if attached) to the end; the records."""
        self.env.process(self._source())
        self.env.process(self._sampler())
        if self._scaler is not None:
            self.env.process(self._scaler.process())
        self.env.run()
        return self._records()


class Engine(FleetContract):
    """Runs one replication of a scenario over given arrival times and random streams."""

    def __init__(self, scenario, arrival_s: np.ndarray, service, router, *, sample_interval_s: float,
                 horizon_s: float, stop_s: float = math.inf) -> None:
        self.env = simpy.Environment()
        self.arrival_s = arrival_s
        self._at = arrival_s.tolist()
        self.n = len(self._at)
        self.policy = BatchPolicy.from_scenario(scenario.batching)
        self.service = service
        self.router = router
        self.warm = getattr(scenario.service, "warmed_up", True)
        self.horizon_s = horizon_s
        self.stop_s = max(stop_s, horizon_s)
        self._halt = self.env.event()  # succeeds when the drain limit stops the run
        self._halt.callbacks.append(simpy.core.StopSimulation.callback)
        self.sample_interval_s = sample_interval_s
        self.instances = instances = scenario.fleet.instances_per_replica
        self._start_fleet([Replica(k, instances) for k in range(initial_replicas(scenario))])
        self._front = None  # where arrivals go first (sim.architectures), None: straight to the router
        self._done = self._on_done  # what a batch's completion event calls (on_batch_done adds a listener)
        self.finished = 0
        self._batch_of = [-1] * self.n
        self._outcome = [SERVED] * self.n
        self._drop_s: dict[int, float] = {}
        self._drop_rep: dict[int, int] = {}  # replica a rejected / timed-out request was routed to
        self._expiry_bound = math.inf  # <= the earliest start deadline of any queued request
        self._b_rep: list[int] = []
        self._b_start: list[float] = []
        self._b_end: list[float] = []
        self._b_size: list[int] = []
        self._b_first: list[bool] = []
        self._series: dict[str, list[float]] = {k: [] for k in
                                                 ("time_s", "queue_len", "in_service", "busy_replicas",
                                                  "ready_replicas", "loading_replicas", "desired_replicas",
                                                  "billed_replicas", "held")}

    # ------------------------------------------------------------ the contract with the fleet and scaler
    def _new_replica(self, index: int, created_s: float) -> Replica:
        return Replica(index, self.instances, created_s=created_s, ready_s=math.inf)

    def snapshot(self) -> tuple[dict[int, tuple[float, int, int, int]], int]:
        """Per ready or draining replica ``(busy instance-seconds, routed, outstanding, queued)``
        cumulative to now, and the requests held at the activator; expired requests settled first."""
        self.expire()
        now = self.env.now
        per = {r.index: (r.busy_instance_s(now), r.arrived, r.outstanding, len(r.queue))
               for r in self._replicas if r.gone_s is None and r.state in ("ready", "draining")}
        return per, len(self._held)

    # ------------------------------------------------------------ the contract with the architectures
    def attach_front(self, front) -> None:
        """Send every arrival to ``front.arrive(i)`` instead of the router; before :meth:`run`."""
        self._front = front

    def admit(self, i: int) -> None:
        """Request ``i`` reaches the fleet now: routed (or held at the activator); its batching delay and
        timeout count from now."""
        self._at[i] = self.env._now
        self._arrive(i)

    def answer_without_model(self, i: int, end_s: float, rep: Replica | None = None) -> None:
        """Request ``i`` is served at ``end_s`` without a batch (a cache hit), by ``rep`` or in front of the fleet."""
        self._drop_s[i] = end_s
        if rep is not None:
            rep.arrived += 1
            self._drop_rep[i] = rep.index
        self.finished += 1

    def ready_replicas(self) -> tuple[Replica, ...]:
        """Replicas taking traffic, in the router's order."""
        return tuple(self._ready)

    def on_batch_done(self, callback: Callable[[Replica, list[int], float], None]) -> None:
        """Call ``callback(replica, request ids, now)`` as each batch finishes (after the engine's own work)."""
        def done_then_tell(event) -> None:
            self._on_done(event)
            callback(*event._value, self.env._now)

        self._done = done_then_tell

    def on_ready(self, callback: Callable[[Replica], None]) -> None:
        """Call ``callback(replica)`` each time a replica starts taking traffic (:meth:`mark_ready`)."""
        self._ready_listeners.append(callback)

    def fail_replica(self, rep: Replica) -> tuple[list[int], list[int]]:
        """``rep`` crashes now: no more traffic; returns (the requests it held, running first; the batches cut
        short, which end now). The batches' completion events, found in SimPy 4's ``env._queue``
        (tests/test_engine_contract.py), are emptied so they complete nothing; the fleet marks ``rep`` gone."""
        self.expire()  # a request whose deadline passed timed out before the crash
        if rep in self._ready:
            self._ready.remove(rep)
        self._when_idle.pop(rep.index, None)
        now, lost, cut = self.env._now, [], []
        for *_, event in sorted(self.env._queue):
            value = event._value
            if type(value) is tuple and value[0] is rep and type(value[1]) is list and value[1]:
                batch = value[1]
                bid = self._batch_of[batch[0]]
                self._b_end[bid] = now
                cut.append(bid)
                for i in batch:
                    self._batch_of[i] = -1
                lost.extend(batch)
                batch.clear()
        lost.extend(rep.queue)
        rep.queue.clear()
        rep.busy_accum, rep.last_change = rep.busy_instance_s(now), now
        rep.free, rep.outstanding = rep.instances, 0
        return lost, cut

    def lose(self, i: int, replica: int) -> None:
        """Request ``i`` is given up now (lost with ``replica`` and not retried): recorded as rejected."""
        self._outcome[i] = REJECTED
        self._drop_s[i] = self.env._now
        self._drop_rep[i] = replica
        self.finished += 1

    # ------------------------------------------------------------ processes
    def _source(self):
        yield from replay_arrivals(self.env, self._at, self._arrive if self._front is None else self._front.arrive)

    def _sampler(self):
        env, dt, series = self.env, self.sample_interval_s, self._series
        while True:
            self.expire()
            series["time_s"].append(env.now)
            replicas = self._replicas
            series["queue_len"].append(sum(len(r.queue) for r in replicas))
            series["in_service"].append(sum(r.outstanding - len(r.queue) for r in replicas))
            series["busy_replicas"].append(sum(1 for r in replicas if r.busy))
            series["ready_replicas"].append(len(self._ready))
            live = [r for r in replicas if r.gone_s is None]
            series["loading_replicas"].append(sum(1 for r in live if r.state not in ("ready", "draining")))
            series["desired_replicas"].append(self._scaler.desired if self._scaler else len(replicas))
            series["billed_replicas"].append(len(live))
            series["held"].append(len(self._held))
            if self._sampling_over():
                return
            yield env.timeout(min(dt, self.stop_s - env.now))

    # ------------------------------------------------------------ events
    def _route(self, i: int) -> None:
        policy = self.policy
        if policy.timeout_s is not None:
            self.expire()  # routers read outstanding counts: none may still hold an expired request
        rep = self.router.choose(self._ready)
        rep.arrived += 1
        if policy.max_queue_size and len(rep.queue) >= policy.max_queue_size:
            self._outcome[i] = REJECTED
            self._drop_s[i] = self.env._now
            self._drop_rep[i] = rep.index
            self.finished += 1
            return
        rep.queue.append(i)
        if policy.timeout_s is not None and self._at[i] + policy.timeout_s < self._expiry_bound:
            self._expiry_bound = self._at[i] + policy.timeout_s
        rep.outstanding += 1
        if rep.free:
            self._dispatch(rep)

    def expire(self) -> None:
        """Time out every queued request whose start deadline has passed, on every replica. Expiry is
        otherwise settled lazily (a replica prunes its own queue when it next looks at it; the records
        are exact either way, ``drop_s`` being the deadline), but routers and the autoscaler's monitor
        read ``outstanding`` and queue lengths, which must not count requests already gone."""
        limit = self.policy.timeout_s
        if limit is None or self._expiry_bound >= self.env._now - EPS_S:  # nothing can have expired yet
            return
        at, bound = self._at, math.inf
        for rep in self._replicas:
            if rep.queue:
                self._prune(rep)
                if rep.queue and at[rep.queue[0]] + limit < bound:
                    bound = at[rep.queue[0]] + limit
        self._expiry_bound = bound

    def _prune(self, rep: Replica) -> None:
        """Drop requests at the head whose start deadline passed (FIFO + one timeout: heads expire first)."""
        q, at, limit, now = rep.queue, self._at, self.policy.timeout_s, self.env._now
        while q and at[q[0]] + limit < now - EPS_S:
            i = q.popleft()
            self._outcome[i] = TIMED_OUT
            self._drop_s[i] = at[i] + limit
            self._drop_rep[i] = rep.index
            rep.outstanding -= 1
            self.finished += 1

    def _dispatch(self, rep: Replica) -> None:
        policy, q, env = self.policy, rep.queue, self.env
        now = env._now
        while rep.free and q:
            if policy.timeout_s is not None:
                self._prune(rep)
                if not q:
                    return
            n = len(q)
            size = policy.size_now[n] if n <= policy.max_batch_size else policy.size_now[-1]
            if not size:
                deadline = self._at[q[0]] + policy.max_queue_delay_s
                if now + EPS_S < deadline:
                    if rep.timer_at != deadline:
                        rep.timer_at = deadline
                        env.timeout(deadline - now, rep).callbacks.append(self._on_timer)
                    return
                size = n if n < policy.max_batch_size else policy.max_batch_size
            self._start_batch(rep, size, now)

    def _start_batch(self, rep: Replica, size: int, now: float) -> None:
        q = rep.queue
        batch = [q.popleft() for _ in range(size)]
        idle_s = now - rep.last_change if rep.free == rep.instances else 0.0
        service_s = self.service.draw(size, idle_s, now, rep.index)
        first = False
        if not self.warm and size not in rep.seen:
            rep.seen.add(size)
            service_s += self.service.first_call_extra_s(size)
            first = True
        bid = len(self._b_start)
        batch_of = self._batch_of
        for i in batch:
            batch_of[i] = bid
        self._b_rep.append(rep.index)
        self._b_start.append(now)
        self._b_end.append(now + service_s)
        self._b_size.append(size)
        self._b_first.append(first)
        rep.busy_accum += (rep.instances - rep.free) * (now - rep.last_change)
        rep.last_change = now
        rep.free -= 1
        self.env.timeout(service_s, (rep, batch)).callbacks.append(self._done)

    def _on_timer(self, event) -> None:
        rep = event._value
        if abs(rep.timer_at - self.env._now) <= EPS_S:
            rep.timer_at = -math.inf
        self._dispatch(rep)

    def _on_done(self, event) -> None:
        rep, batch = event._value
        size = len(batch)
        now = self.env._now
        rep.busy_accum += (rep.instances - rep.free) * (now - rep.last_change)
        rep.last_change = now
        rep.outstanding -= size
        rep.free += 1
        self.finished += size
        if self._latency_log is not None:
            at = self._at
            self._latency_log.extend((now, now - at[i]) for i in batch)
        self._dispatch(rep)
        if self._when_idle and rep.outstanding == 0 and rep.index in self._when_idle:
            self._when_idle.pop(rep.index)(rep)

    # ------------------------------------------------------------ output
    def _records(self) -> RawRecords:
        drop = np.full(self.n, np.nan)
        if self._drop_s:
            idx = np.fromiter(self._drop_s.keys(), dtype=np.int64, count=len(self._drop_s))
            drop[idx] = np.fromiter(self._drop_s.values(), dtype=float, count=len(self._drop_s))
        drop_rep = np.full(self.n, -1, dtype=np.int32)
        if self._drop_rep:
            idx = np.fromiter(self._drop_rep.keys(), dtype=np.int64, count=len(self._drop_rep))
            drop_rep[idx] = np.fromiter(self._drop_rep.values(), dtype=np.int32, count=len(self._drop_rep))
        end_s = self.env.now
        for rep in self._replicas:
            if rep.gone_s is None:
                rep.gone_s = max(end_s, self.horizon_s)
        batch_of = np.asarray(self._batch_of, dtype=np.int64)
        batch_end = np.asarray(self._b_end, dtype=float)
        outcome = np.asarray(self._outcome, dtype=np.int8)
        if self.finished < self.n:  # stopped by the drain limit: never started, or still in service
            running = np.zeros(self.n, dtype=bool)
            started = batch_of >= 0
            running[started] = batch_end[batch_of[started]] > end_s + EPS_S
            answered = ~np.isnan(drop)  # served without a batch (cache hits)
            outcome[(outcome == SERVED) & ~answered & (~started | running)] = UNFINISHED
        return RawRecords(
            arrival_s=self.arrival_s,
            batch_of=batch_of,
            outcome=outcome,
            drop_s=drop,
            drop_replica=drop_rep,
            batch_replica=np.asarray(self._b_rep, dtype=np.int32),
            batch_start_s=np.asarray(self._b_start, dtype=float),
            batch_end_s=batch_end,
            batch_size=np.asarray(self._b_size, dtype=np.int32),
            batch_first_call=np.asarray(self._b_first, dtype=bool),
            timeseries={k: np.asarray(v, dtype=float) for k, v in self._series.items()},
            replicas=self._replicas,
            horizon_s=self.horizon_s,
            end_s=end_s,
        )
