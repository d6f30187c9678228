"""The token-level engine: replicas that run vLLM-style iterations, on SimPy, behind the request-level
engine's contract (``sim.serving.engine``), so the fleet lifecycle, monitor and autoscalers of
``sim.scaling`` drive it unchanged.

Timeline of one request::

    arrive -> held at the activator (no ready replica) | router picks a ready replica -> waiting
    waiting -> admitted by the replica's scheduler -> prefill (in chunks) -> first token
            -> one token per iteration -> last token: served
    (preempted when KV blocks run out: back to waiting, recomputed later)

A replica runs iterations back to back while it has work: each is formed by its
:class:`~sim.llm.scheduler.Scheduler`, lasts the iteration-time model's ``step_s``, and is applied at its
end; a request arriving at an idle replica starts one at once. One SimPy event per iteration, whatever
the number of sequences in it. After the horizon the engine runs until every request has finished or
``stop_s``; requests left then are ``unfinished``.

The contract is :class:`~sim.serving.engine.Engine`'s: ``add_replica``, ``mark_ready``, ``stop_routing``,
``ready_count``, ``replicas``, ``snapshot``, ``latency_log``, ``attach_scaler``. ``snapshot`` adds two
fields per replica after the four the monitor reads: the KV-cache share in use and the running
sequences (the HPA metrics ``kv_cache_utilization`` and ``running_sequences`` read them). Routers see
``outstanding`` = waiting + running sequences; ``queue`` is the waiting queue.

Disaggregated (``llm.disaggregation``): the first ``prefill_replicas`` replicas only prefill and take the
arrivals (the router picks among them); the other ``decode_replicas`` only decode. A prompt computed on a
prefill replica is handed to a decode replica (a second router of the same kind, by outstanding
sequences), which admits it when it has the blocks and pulls its KV: its KV bytes /
(``kv_transfer_bytes_per_s`` × links), one link per GPU of the smaller replica, one copy at a time on a
replica's links (FIFO), then ``kv_transfer_latency_s``. Each pool
has its own iteration-time model and KV blocks (``pools``: its tensor parallelism and GPU). The
prefill replica's blocks stay parked until the copy is done, so a full decode pool backs up into the
prefill pool. The first token reaches the client when the KV has landed (TTFT = queue + prefill +
wait for decode blocks + copy). Each pool may have its own autoscaler, driving it through a
:class:`PoolView`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy

from sim.llm.scheduler import Scheduler, Sequences
from sim.serving.engine import FleetContract, Replica, initial_replicas, replay_arrivals

SERIES = ("time_s", "queue_len", "in_service", "busy_replicas", "ready_replicas", "loading_replicas",
          "desired_replicas", "billed_replicas", "held", "running_sequences", "waiting_sequences", "kv_utilization")
ITERATION_FIELDS = ("replica", "start_s", "end_s", "size", "prefill_tokens", "decode_tokens", "output_tokens",
                    "kv_tokens_read", "kv_blocks_used", "preempted")


class LlmReplica(Replica):
    """A model server over ``gpus`` GPUs: a scheduler (waiting queue, running set, KV blocks) and one
    iteration at a time (``instances`` 1: busy while an iteration runs)."""

    __slots__ = ("sched", "step")

    def __init__(self, index: int, sched: Scheduler, step, created_s: float = 0.0, ready_s: float = 0.0) -> None:
        super().__init__(index, 1, created_s, ready_s)
        self.sched = sched
        self.step = step  # its iteration-time model (a disaggregated pool may run other GPUs)
        self.queue = sched.waiting  # waiting sequences: what the monitor and the time series count as queued

    @property
    def role(self) -> str:
        """"both" (prefill and decode), or "prefill" / "decode" in a disaggregated fleet."""
        return self.sched.role


@dataclass
class LlmRecords:
    """What one token-level run produced (turned into tables by ``sim.llm.run``)."""

    arrival_s: np.ndarray
    seqs: Sequences
    replica: np.ndarray  # replica each request was routed to (-1: still held at the activator)
    decode_replica: np.ndarray  # replica it decoded on: ``replica``, or a decode replica when disaggregated
    iterations: dict[str, np.ndarray]
    timeseries: dict[str, np.ndarray]
    replicas: list
    horizon_s: float
    end_s: float


class LlmEngine(FleetContract):
    """Runs one replication of an llm scenario over given arrivals and token counts."""

    def __init__(self, scenario, arrival_s: np.ndarray, seqs: Sequences, step_time, router, *, kv_blocks: int,
                 sample_interval_s: float, horizon_s: float, stop_s: float = math.inf,
                 next_turn: np.ndarray | None = None, think_s: np.ndarray | None = None,
                 decode_router=None, pools: dict | None = None, kv_copy_s_per_token: float = 0.0) -> None:
        llm = scenario.llm
        self.env = simpy.Environment()
        self.arrival_s = arrival_s
        self._at = arrival_s.tolist()
        # Conversations (sim.workload.conversations): a later turn (arrival NaN) comes a think time after the
        # reply to the one before, if that is before the horizon. ``n`` counts the requests that arrive.
        self._next_turn = next_turn.tolist() if next_turn is not None else None
        self._think_s = think_s.tolist() if think_s is not None else None
        self.n = self._first = int(np.isfinite(arrival_s).sum())
        self.seqs = seqs
        self.step = step_time
        self.router = router
        self._keyed = getattr(router, "keyed", False)  # it routes by the request's shared prefix
        self._knobs = dict(max_num_seqs=llm.max_num_seqs, max_num_batched_tokens=llm.max_num_batched_tokens,
                           block_size=llm.block_size, kv_blocks=kv_blocks, chunked_prefill=llm.enable_chunked_prefill,
                           policy=llm.scheduling_policy)
        self.horizon_s = horizon_s
        self.stop_s = max(stop_s, horizon_s)
        self._halt = self.env.event()
        self._halt.callbacks.append(simpy.core.StopSimulation.callback)
        self.sample_interval_s = sample_interval_s
        disagg = llm.disaggregation
        self._pools = pools or {}  # role -> (iteration-time model, KV blocks) of a disaggregated pool's replicas
        if disagg is None:
            self._start_fleet([self._make_replica(k) for k in range(initial_replicas(scenario))])
            self._decoders: list[LlmReplica] = []
        else:
            p, d = disagg.prefill_replicas, disagg.decode_replicas
            self._start_fleet([self._make_replica(k, role) for k, role in enumerate(["prefill"] * p + ["decode"] * d)])
            self._ready, self._decoders = self._replicas[:p], self._replicas[p:]
            self._decode_router = decode_router
            self._copy_latency_s = disagg.kv_transfer_latency_s
            self._copy_s_per_token = kv_copy_s_per_token
            self._link_free_s = [0.0] * (p + d)  # per replica: when its links finish the copies given them
        self.finished = 0
        self._replica_of = [-1] * len(self._at)
        self._decode_of = [-1] * len(self._at)
        self._log: dict[str, list] = {k: [] for k in ITERATION_FIELDS}
        self._series: dict[str, list[float]] = {k: [] for k in SERIES}

    # ------------------------------------------------------------ the contract with the fleet and scaler
    def _make_replica(self, index: int, role: str = "both", created_s: float = 0.0, ready_s: float = 0.0) -> LlmReplica:
        """A replica with an empty KV cache: a mixed one, or one of a disaggregated pool (its own iteration
        times and KV blocks)."""
        step, kv_blocks = self._pools.get(role, (self.step, self._knobs["kv_blocks"]))
        return LlmReplica(index, Scheduler(self.seqs, **{**self._knobs, "kv_blocks": kv_blocks}, role=role), step,
                          created_s=created_s, ready_s=ready_s)

    def _new_replica(self, index: int, created_s: float) -> LlmReplica:
        """A new replica, starting (the fleet lifecycle marks it ready)."""
        return self._make_replica(index, created_s=created_s, ready_s=math.inf)

    def snapshot(self) -> tuple[dict[int, tuple], int]:
        """Per ready or draining replica ``(busy seconds, routed, outstanding, waiting, KV share used,
        running)`` cumulative to now, and the requests held at the activator."""
        now = self.env.now
        per = {r.index: (r.busy_instance_s(now), r.arrived, r.outstanding, len(r.queue),
                         r.sched.used_blocks / r.sched.total_blocks, len(r.sched.running))
               for r in self._replicas if r.gone_s is None and r.state in ("ready", "draining")}
        return per, len(self._held)

    # ------------------------------------------------------------ processes
    def _source(self):
        yield from replay_arrivals(self.env, self._at[:self._first], self._arrive)  # the first turns lead

    def _next_turn_after(self, i: int, now: float) -> None:
        """Request ``i`` was answered at ``now``: its conversation's next turn comes a think time later."""
        j = self._next_turn[i]
        if j < 0 or now + self._think_s[j] >= self.horizon_s:
            return
        self._at[j] = now + self._think_s[j]
        self.n += 1
        self.env.timeout(self._think_s[j]).callbacks.append(lambda _event, j=j: self._arrive(j))

    def _sampler(self):
        env, dt, series = self.env, self.sample_interval_s, self._series
        while True:
            replicas = self._replicas
            waiting = sum(len(r.queue) for r in replicas)
            running = sum(len(r.sched.running) for r in replicas)
            live = [r for r in replicas if r.gone_s is None]
            ready = self._ready + self._decoders
            row = (env.now, waiting, running, sum(1 for r in replicas if r.busy), len(ready),
                   sum(1 for r in live if r.state not in ("ready", "draining")),
                   self._scaler.desired if self._scaler else len(replicas), len(live), len(self._held),
                   running, waiting,
                   sum(r.sched.used_blocks / r.sched.total_blocks for r in ready) / len(ready) if ready else 0.0)
            for key, value in zip(SERIES, row):
                series[key].append(value)
            if self._sampling_over():
                return
            yield env.timeout(min(dt, self.stop_s - env.now))

    # ------------------------------------------------------------ events

    def _route(self, i: int) -> None:
        self._place(i, self.router, self._ready, self._replica_of)

    def _place(self, i: int, router, replicas: list[LlmReplica], record: list[int]) -> None:
        """Request ``i`` joins the queue of the replica ``router`` picks among ``replicas`` (noted in
        ``record``), which starts an iteration if it was idle."""
        rep = router.choose(replicas, self.seqs.route_key(i)) if self._keyed else router.choose(replicas)
        rep.arrived += 1
        rep.outstanding += 1
        record[i] = rep.index
        rep.sched.add(i)
        if rep.free:
            self._start(rep)

    def _start(self, rep: LlmReplica) -> None:
        now = self.env._now
        it = rep.sched.schedule(now)
        if rep.sched.pulls:
            self._pull(rep)
        if it is None:
            return
        step_s = rep.step.step_s(it.prefill_tokens, it.decode_tokens, it.kv_tokens_read, it.attention_pairs,
                                  start_s=now, output_tokens=it.output_tokens, idle_s=now - rep.last_change)
        log = self._log
        for key, value in zip(ITERATION_FIELDS, (rep.index, now, now + step_s, it.size, it.prefill_tokens,
                                                 it.decode_tokens, it.output_tokens, it.kv_tokens_read,
                                                 rep.sched.used_blocks, it.preempted)):
            log[key].append(value)
        rep.busy_accum += (rep.instances - rep.free) * (now - rep.last_change)
        rep.last_change = now
        rep.free = 0
        self.env.timeout(step_s, (rep, it)).callbacks.append(self._on_done)

    def _on_done(self, event) -> None:
        rep, it = event._value
        now = self.env._now
        rep.busy_accum += now - rep.last_change
        rep.last_change = now
        rep.free = 1
        done = rep.sched.complete(it, now)
        if rep.sched.handoffs:
            self._hand_off(rep)
        if done:
            rep.outstanding -= len(done)
            self.finished += len(done)
            if self._next_turn is not None:
                for i in done:
                    self._next_turn_after(i, now)
            if self._latency_log is not None:
                at = self._at
                self._latency_log.extend((now, now - at[i]) for i in done)
        self._carry_on(rep)

    def _carry_on(self, rep: LlmReplica) -> None:
        """An idle ``rep`` starts its next iteration, or, draining with nothing left (copies to or from it
        included), is retired."""
        if rep.sched.has_work():
            if rep.free:
                self._start(rep)
        elif self._when_idle and rep.index in self._when_idle:
            self._when_idle.pop(rep.index)(rep)

    # ------------------------------------------------------------ disaggregated prefill and decode
    def _hand_off(self, rep: LlmReplica) -> None:
        """Prompts ``rep`` (a prefill replica) computed go to decode replicas' queues."""
        for i in rep.sched.handoffs:
            rep.outstanding -= 1
            self._place(i, self._decode_router, self._decoders, self._decode_of)
        rep.sched.handoffs.clear()

    def _pull(self, dst: LlmReplica) -> None:
        """``dst`` (a decode replica) reserved blocks for these sequences: copy their KV in. One copy at a
        time per replica's links, in the order they were reserved: a copy's bytes start when both its
        source's and its destination's links are free, and it lands ``kv_transfer_latency_s`` after them."""
        now, free = self.env._now, self._link_free_s
        for i in dst.sched.pulls:
            src = self._replica_of[i]
            start = max(now, free[src], free[dst.index])
            free[src] = free[dst.index] = done = start + self.seqs.target[i] * self._copy_s_per_token
            self.env.timeout(done + self._copy_latency_s - now, (dst, i)).callbacks.append(self._landed)
        dst.sched.pulls.clear()

    def _landed(self, event) -> None:
        dst, i = event._value
        src = self._replicas[self._replica_of[i]]
        src.sched.release_parked(i)
        self._carry_on(src)
        self.seqs.first_token_s[i] = self.env._now
        dst.sched.land(i)
        self._carry_on(dst)

    def pool(self, role: str) -> PoolView:
        """The ``role`` pool ("prefill" or "decode") as a fleet an autoscaler can drive."""
        return PoolView(self, role)

    def attach_pool_scaler(self, role: str, scaler) -> None:
        """The ``role`` pool's autoscaler (sim.scaling.scaler.Scaler) runs beside the arrivals; the engine's
        own scaler hooks become :class:`PoolScalers` over every pool's."""
        if self._scaler is None:
            self._scaler = PoolScalers(self.env)
        self._scaler.scalers[role] = scaler

    # ------------------------------------------------------------ output
    def _records(self) -> LlmRecords:
        end_s = self.env.now
        for rep in self._replicas:
            if rep.gone_s is None:
                rep.gone_s = max(end_s, self.horizon_s)
        iterations = {k: np.asarray(v) for k, v in self._log.items()}
        return LlmRecords(arrival_s=np.asarray(self._at, dtype=float), seqs=self.seqs,
                          replica=np.asarray(self._replica_of, dtype=np.int32),
                          decode_replica=np.asarray([d if d >= 0 else r for d, r in zip(self._decode_of, self._replica_of)],
                                                    dtype=np.int32), iterations=iterations,
                          timeseries={k: np.asarray(v, dtype=float) for k, v in self._series.items()},
                          replicas=self._replicas, horizon_s=self.horizon_s, end_s=end_s)


class PoolView:
    """One pool of a disaggregated engine, with the contract ``sim.scaling`` drives a fleet through
    (``env``, ``replicas``, ``ready_count``, ``add_replica``, ``mark_ready``, ``stop_routing``,
    ``snapshot``, ``latency_log``, ``attach_scaler``): a pool's autoscaler sees and changes its pool only.
    A replica it drains is retired once it has nothing left, copies to or from it included."""

    def __init__(self, engine: LlmEngine, role: str) -> None:
        self.engine, self.role, self.env = engine, role, engine.env
        self._ready = engine._ready if role == "prefill" else engine._decoders

    def replicas(self) -> tuple[LlmReplica, ...]:
        return tuple(r for r in self.engine._replicas if r.role == self.role)

    def ready_count(self) -> int:
        return len(self._ready)

    def add_replica(self, created_s: float) -> LlmReplica:
        e = self.engine
        rep = e._make_replica(len(e._replicas), self.role, created_s=created_s, ready_s=math.inf)
        e._replicas.append(rep)
        e._link_free_s.append(0.0)
        return rep

    def mark_ready(self, rep: LlmReplica) -> None:
        if self.role == "prefill":  # the engine's own ready list: it also routes the requests held meanwhile
            self.engine.mark_ready(rep)
        else:
            rep.last_change = self.env.now
            self._ready.append(rep)

    def stop_routing(self, rep: LlmReplica, when_idle) -> None:
        self._ready.remove(rep)
        if rep.outstanding == 0 and not rep.sched.has_work():
            when_idle(rep)
        else:
            self.engine._when_idle[rep.index] = when_idle

    def snapshot(self) -> tuple[dict[int, tuple], int]:
        per, held = self.engine.snapshot()
        mine = {r.index for r in self._ready} | {r.index for r in self.replicas() if r.state == "draining"}
        return {k: v for k, v in per.items() if k in mine}, (held if self.role == "prefill" else 0)

    def latency_log(self) -> list[tuple[float, float]]:
        return self.engine.latency_log()

    def attach_scaler(self, scaler) -> None:
        self.engine.attach_pool_scaler(self.role, scaler)


class PoolScalers:
    """Every pool's autoscaler as the one set of scaler hooks the engine runs (``ScalerHooks``): their
    processes start together, arrivals with no prefill replica ready poke the prefill pool's, and the
    desired count is the pools' sum."""

    def __init__(self, env) -> None:
        self.env, self.scalers = env, {}  # role -> its pool's scaler

    @property
    def desired(self) -> int:
        return sum(s.desired for s in self.scalers.values())

    def process(self):
        for scaler in self.scalers.values():
            self.env.process(scaler.process())
        yield self.env.timeout(0)

    def on_empty(self) -> None:
        if "prefill" in self.scalers:  # a fixed prefill pool is never empty
            self.scalers["prefill"].on_empty()

    def stop(self) -> None:
        for scaler in self.scalers.values():
            scaler.stop()
