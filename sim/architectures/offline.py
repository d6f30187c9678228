"""Offline batch inference: a job of N items, a fleet of K replicas at batch size B, a deadline.

The job is submitted at 0 with all its items there, cut into ⌈N/B⌉ batches (full but the last) on one
work queue. Its K replicas (``fleet.replicas``) are requested at 0 and cold-start as online replicas do
(``sim.scaling.lifecycle.PhaseSampler``: provisioning, image pull, weight load, warm-up; no readiness
probe, since nothing routes to a batch worker). A ready replica takes the next batch, runs it for a service
time drawn from ``sim.serving.service`` (the parametric or profile models of online serving, with the
first-call cost when ``service.warmed_up`` is false), then takes the next; when the queue is empty it is
released and its billing stops (the pods of a Kubernetes Job on a work queue exit once it is empty).

Spot capacity (``offline.capacity_type: spot``) costs ``1 − spot_discount`` of ``cost.usd_per_replica_hour``
and is reclaimed as a Poisson process per replica (its own stream, spawned from the lifecycle stream, so
cold starts are the same draws as on demand): the batch in flight is lost (logged with ``lost``, billed,
and put back at the head of the queue) and a replacement is requested at once, cold start and all.

Records: ``batches`` (plus ``lost``), ``replicas`` (plus ``reclaimed``), a ``timeseries`` of the fleet and
its progress, and, for ``capsim simulate``, one ``requests`` row per item (arrival 0, the batch that
completed it). The summary is :func:`job_summary`, a pure function of the tables.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.errors import ScenarioError
from sim.results.records import SERVED, UNFINISHED, batch_frame, replica_frame, request_frame
from sim.results.timeline import _utilization as busy_share
from sim.scaling.lifecycle import PhaseSampler
from sim.serving.engine import Replica
from sim.serving.service import build_service

MAX_JOB_BATCHES = 2_000_000  # batches one simulated job may have (about 10 s of simulation)
STOP_FACTOR = 10.0  # a job still running at this many times its deadline is stopped; what is left is unfinished
READY, DONE, RECLAIM = range(3)


@dataclass
class JobRun:
    """One replication of a job: its tables, summary, and per job batch the logged batch that completed it."""

    batches: pd.DataFrame
    replicas: pd.DataFrame
    timeseries: pd.DataFrame
    summary: dict
    completed_by: np.ndarray  # per job batch j (items j·B …): row of ``batches`` that completed it, −1 if none


def price_usd_per_replica_hour(scenario) -> float:
    """What one replica-hour of the job costs: the on-demand price, or the spot price."""
    off, price = scenario.offline, scenario.cost.usd_per_replica_hour
    return price * (1.0 - off.spot_discount) if off.capacity_type == "spot" else price


def job_batches(scenario) -> int:
    """⌈items / max_batch_size⌉, refused beyond ``MAX_JOB_BATCHES`` with the keys to change."""
    items, b = scenario.offline.job_items, scenario.batching.max_batch_size
    n = math.ceil(items / b)
    if n > MAX_JOB_BATCHES:
        raise ScenarioError(f"offline: {items:,} items at batching.max_batch_size = {b} are {n:,} batches; at most "
                            f"{MAX_JOB_BATCHES:,} are simulated: raise max_batch_size (or simulate a share of the "
                            "items and scale the makespan)")
    return n


# ---------------------------------------------------------------- the job, batch by batch
class JobLoop:
    """The work queue, the fleet and its batches, as a heap of (time, order, kind, replica) events."""

    def __init__(self, scenario, service, phases: PhaseSampler, reclaim_rng: np.random.Generator) -> None:
        off = scenario.offline
        self.items, self.b = off.job_items, scenario.batching.max_batch_size
        self.n_batches = job_batches(scenario)
        self.service, self.phases, self.reclaim_rng = service, phases, reclaim_rng
        self.warm = getattr(scenario.service, "warmed_up", True)
        self.fleet = scenario.fleet.replicas
        spot = off.capacity_type == "spot" and off.spot_interruptions_per_hour > 0
        self.reclaim_mean_s = 3600.0 / off.spot_interruptions_per_hour if spot else math.inf
        self.stop_s = STOP_FACTOR * off.deadline_s
        self.next_batch = 0
        self.redo: deque[int] = deque()  # job batches lost to a reclaim, done first
        self.events: list[tuple[float, int, int, int]] = []
        self.order = itertools.count()
        self.replicas: list[Replica] = []
        self.reclaimed: set[int] = set()
        self.running: dict[int, int] = {}  # replica -> log row of its batch in flight
        self.completed_by = np.full(self.n_batches, -1, dtype=np.int64)
        self.log: dict[str, list] = {k: [] for k in ("replica", "start_s", "end_s", "size", "first_call", "lost",
                                                      "job_batch")}

    def run(self) -> None:
        for _ in range(self.fleet):
            self.launch(0.0)
        while self.events:
            t, _, kind, index = heapq.heappop(self.events)
            if t > self.stop_s:
                break
            rep = self.replicas[index]
            if rep.gone_s is not None:
                continue
            if kind == READY:
                rep.state = "ready"
                self.take(rep, t)
            elif kind == DONE:
                row = self.running.pop(index)
                self.completed_by[self.log["job_batch"][row]] = row
                self.take(rep, t)
            else:
                self.reclaim(rep, t)
        self.stop()

    def push(self, t: float, kind: int, index: int) -> None:
        heapq.heappush(self.events, (t, next(self.order), kind, index))

    def launch(self, now: float) -> None:
        rep = Replica(len(self.replicas), 1, created_s=now, ready_s=math.inf)
        p = self.phases.phases()
        rep.container_s = now + p["provision"] + p["pull"]
        rep.up_s = rep.ready_s = rep.container_s + p["load"] + p["warmup"]
        rep.state = "provisioning"
        self.replicas.append(rep)
        self.push(rep.ready_s, READY, rep.index)
        if math.isfinite(self.reclaim_mean_s):
            self.push(now + float(self.reclaim_rng.exponential(self.reclaim_mean_s)), RECLAIM, rep.index)

    def work_left(self) -> bool:
        return bool(self.redo) or self.next_batch < self.n_batches

    def take(self, rep: Replica, now: float) -> None:
        """Start the next batch on ``rep``, or release it when the queue is empty."""
        if not self.work_left():
            rep.gone_s, rep.state = now, "gone"
            return
        if self.redo:
            j = self.redo.popleft()
        else:
            j, self.next_batch = self.next_batch, self.next_batch + 1
        size = self.b if j < self.n_batches - 1 else self.items - (self.n_batches - 1) * self.b
        service_s = self.service.draw(size, 0.0, now, rep.index)
        first = not self.warm and size not in rep.seen
        if first:
            rep.seen.add(size)
            service_s += self.service.first_call_extra_s(size)
        self.running[rep.index] = len(self.log["start_s"])
        for key, value in (("replica", rep.index), ("start_s", now), ("end_s", now + service_s), ("size", size),
                           ("first_call", first), ("lost", False), ("job_batch", j)):
            self.log[key].append(value)
        self.push(now + service_s, DONE, rep.index)

    def reclaim(self, rep: Replica, now: float) -> None:
        """The provider takes ``rep`` back: its batch in flight is lost; a replacement starts if work is left."""
        row = self.running.pop(rep.index, None)
        if row is not None:
            self.log["end_s"][row], self.log["lost"][row] = now, True
            self.redo.appendleft(self.log["job_batch"][row])
        rep.gone_s, rep.state = now, "gone"
        self.reclaimed.add(rep.index)
        if self.work_left():
            self.launch(now)

    def stop(self) -> None:
        """Stopped at ``stop_s`` with work left: batches in flight end there unfinished, replicas are released."""
        for row in self.running.values():
            if self.log["end_s"][row] > self.stop_s:
                self.log["end_s"][row] = self.stop_s
        for rep in self.replicas:
            if rep.gone_s is None:
                rep.gone_s, rep.state = self.stop_s, "gone"


# ---------------------------------------------------------------- running and tables
def simulate_job(scenario, rng: dict[str, np.random.Generator], sample_interval_s: float | None = None,
                 max_samples: int = 2_000_000) -> JobRun:
    """One replication of ``scenario.offline`` from the replication's streams (``sim.runner.streams``)."""
    service = build_service(scenario, rng["service"])
    phases = PhaseSampler(scenario.cold_start, getattr(service, "profile", None),
                          getattr(scenario.service, "warmed_up", True), rng["lifecycle"])
    loop = JobLoop(scenario, service, phases, rng["lifecycle"].spawn(1)[0])
    loop.run()
    log = loop.log
    batches = batch_frame(log["replica"], log["start_s"], log["end_s"], log["size"], log["first_call"],
                          lost=np.asarray(log["lost"], dtype=bool))
    replicas = replica_frame(loop.replicas)
    replicas["reclaimed"] = replicas["replica"].isin(loop.reclaimed)
    price = price_usd_per_replica_hour(scenario)
    end_s = float(replicas["gone_s"].max())
    interval = sample_interval_s or max(end_s / 600.0, 0.01)
    if end_s / interval > max_samples:
        raise ScenarioError(f"run.sample_interval_s = {interval:g}: {end_s / interval:,.0f} time-series samples over "
                            f"the job ({end_s:g} s); at most {max_samples:,}: raise it")
    series = job_timeseries(batches, replicas, interval, price, scenario.fleet.replicas)
    summary = job_summary(batches, replicas, items=loop.items, deadline_s=scenario.offline.deadline_s,
                          usd_per_replica_hour=price)
    return JobRun(batches, replicas, series, summary, loop.completed_by)


def item_frame(job: JobRun, items: int, batch_size: int) -> pd.DataFrame:
    """The ``requests`` table of a job: one row per item, all arriving at 0, served by the batch that
    completed it (``unfinished`` if none did)."""
    row = job.completed_by[np.arange(items, dtype=np.int64) // batch_size]
    done = row >= 0
    safe = np.where(done, row, 0)

    def column(name: str, missing: float) -> np.ndarray:
        if job.batches.empty:
            return np.full(items, missing)
        return np.where(done, job.batches[name].to_numpy()[safe], missing)

    return request_frame(np.zeros(items), column("start_s", np.nan), column("end_s", np.nan),
                         column("replica", -1), column("size", 0), np.where(done, SERVED, UNFINISHED))


def _open_count(starts: np.ndarray, ends: np.ndarray, t: np.ndarray) -> np.ndarray:
    """How many of the intervals [start, end) hold each time in ``t``."""
    keep = ends > starts
    s, e = np.sort(starts[keep]), np.sort(ends[keep])
    return np.searchsorted(s, t, side="right") - np.searchsorted(e, t, side="right")


def job_timeseries(batches: pd.DataFrame, replicas: pd.DataFrame, dt: float, usd_per_replica_hour: float,
                   fleet: int) -> pd.DataFrame:
    """The fleet and the job's progress every ``dt`` from 0 to the last replica's release (docs/results.md)."""
    end = float(replicas["gone_s"].max())
    t = np.arange(0.0, end + dt, dt)
    created, ready, gone = (replicas[c].to_numpy(dtype=float) for c in ("created_s", "ready_s", "gone_s"))
    start, stop = batches["start_s"].to_numpy(), batches["end_s"].to_numpy()
    billed = _open_count(created, gone, t)
    kept = ~batches["lost"].to_numpy(dtype=bool)
    order = np.argsort(stop[kept], kind="stable")
    done = np.concatenate([[0], np.cumsum(batches["size"].to_numpy()[kept][order])])
    ts = pd.DataFrame({
        "time_s": t,
        "busy_replicas": _open_count(start, stop, t),
        "ready_replicas": _open_count(ready, gone, t),
        "loading_replicas": _open_count(created, np.minimum(ready, gone), t),
        "desired_replicas": np.full(t.size, fleet),
        "billed_replicas": billed,
        "items_done": done[np.searchsorted(stop[kept][order], t, side="right")],
    })
    ts["utilization"] = busy_share(t, dt, batches, billed, replicas)
    ts["cost_rate_usd_per_h"] = billed * usd_per_replica_hour
    return ts


def job_summary(batches: pd.DataFrame, replicas: pd.DataFrame, *, items: int, deadline_s: float,
                usd_per_replica_hour: float) -> dict[str, float | int | bool]:
    """The flat summary of one job (keys as in summary.json, docs/results.md)."""
    lost = batches["lost"].to_numpy(dtype=bool)
    sizes, ends = batches["size"].to_numpy(), batches["end_s"].to_numpy()
    done = int(sizes[~lost].sum())
    finished = done >= items
    makespan = float(ends[~lost].max()) if finished else math.nan
    created, ready, gone = (replicas[c].to_numpy(dtype=float) for c in ("created_s", "ready_s", "gone_s"))
    billed_s = float(np.clip(gone - created, 0, None).sum())
    busy_s = float((ends - batches["start_s"].to_numpy()).sum())
    started = ready <= gone
    gpu_hours = billed_s / 3600.0
    cost = gpu_hours * usd_per_replica_hour
    return {
        "items_total": int(items),
        "items_done": done,
        "items_unfinished": int(items - done),
        "items_redone": int(sizes[lost].sum()),
        "batches_done": int((~lost).sum()),
        "makespan_s": makespan,
        "deadline_s": float(deadline_s),
        "deadline_met": bool(finished and makespan <= deadline_s),
        "deadline_slack_s": deadline_s - makespan,
        "first_ready_s": float(ready[started].min()) if started.any() else math.nan,
        "cold_start_mean_s": float((ready - created)[started].mean()) if started.any() else math.nan,
        "throughput_items_per_s": done / makespan if finished and makespan > 0 else math.nan,
        "replicas_launched": int(len(replicas)),
        "interruptions": int(replicas["reclaimed"].sum()) if "reclaimed" in replicas else 0,
        "utilization": busy_s / billed_s if billed_s > 0 else math.nan,
        "gpu_hours": gpu_hours,
        "price_usd_per_replica_hour": float(usd_per_replica_hour),
        "cost_usd": cost,
        "cost_per_million_items_usd": cost / done * 1e6 if done else math.nan,
    }


def run_offline_once(scenario, rng: dict[str, np.random.Generator], *, max_samples: int):
    """(requests, batches, timeseries, replicas, summary) of one replication, requests being the items."""
    job = simulate_job(scenario, rng, scenario.run.sample_interval_s, max_samples)
    requests = item_frame(job, scenario.offline.job_items, scenario.batching.max_batch_size)
    return requests, job.batches, job.timeseries, job.replicas, job.summary


def check_job_size(scenario, bytes_per_item: int) -> None:
    """Refuse, before anything runs, a job with more items (one ``requests`` row each) than ``run.max_requests``."""
    n, limit = scenario.offline.job_items, scenario.run.max_requests
    if n > limit:
        raise ScenarioError(f"offline: {n:,} items, one requests row each, about {n * bytes_per_item / 1e9:,.1f} GB "
                            f"of memory; run.max_requests = {limit:,}: raise it to simulate them all, or plan with "
                            "`capsim plan-offline`, which keeps no per-item rows")
