"""Planning an offline job: the cheapest fleet (GPU type, replicas, batch size, on-demand or spot) whose
makespan meets the deadline.

Devices come from ``sim.planner.candidates.gpu_candidates``, as for ``capsim plan``; every configuration is
simulated by the one sweep loop (``sim.experiments.sweep.run_points`` → ``run_scenarios``: resumable through a
checkpoint, on any executor). For each (GPU, batch size, capacity type) the replica count starts from the
closed form (``sim.theory.architectures.offline_replicas_needed`` with the mean batch time and the mean cold
start, raised for spot reclaims) and is searched in lock step, all configurations advancing together: the
fewest replicas that meet the deadline. A fleet *meets the deadline* when every replication finished in time
and the upper 95% bound of its makespan over replications is at most the deadline (with one replication, the
makespan itself). More replicas only add cold starts to the bill, so the fewest replicas that meet it are the
cheapest of their configuration; configurations are ranked by the job's cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sim.architectures.offline import MAX_JOB_BATCHES
from sim.experiments.sweep import run_points
from sim.planner.candidates import Candidate
from sim.scaling.lifecycle import cold_start_phases
from sim.scenario.keys import updated
from sim.serving.service import build_service
from sim.theory.architectures import offline_replicas_needed

CAPACITY_TYPES = ("on_demand", "spot")
DEFAULT_BATCH_SIZES = (32, 64, 128, 256)
MAX_FLEET = 10000  # fleet.replicas' bound


@dataclass
class FleetSearch:
    """One configuration's bracket on the replica count: ``fail`` known too few, ``ok`` known enough."""

    config: dict
    guess: int
    fail: int = 0
    ok: int | None = None

    def points(self) -> list[int]:
        if self.ok is None and self.fail == 0 and self.guess > 1:
            return [self.guess - 1, self.guess]  # the first round checks the closed form and one below it
        return [self.guess]

    def observe(self, meets: dict[int, bool]) -> None:
        for k, good in meets.items():
            if good:
                self.ok = k if self.ok is None else min(self.ok, k)
            else:
                self.fail = max(self.fail, k)
        if self.done:
            return
        if self.ok is None:
            self.guess = min(MAX_FLEET, max(self.fail + 1, 2 * self.fail))
        else:
            self.guess = (self.fail + self.ok) // 2

    @property
    def done(self) -> bool:
        return (self.ok is not None and self.ok - self.fail <= 1) or (self.ok is None and self.fail >= MAX_FLEET)


@dataclass
class OfflinePlan:
    table: pd.DataFrame  # every fleet simulated, ranked: meets the deadline first, then the job's cost
    fleets: pd.DataFrame  # per configuration, the fewest replicas that meet the deadline (or the most tried)
    params: list[str]
    computed: int = 0
    reused: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> pd.Series | None:
        ok = self.fleets[self.fleets["meets_deadline"]]
        return None if ok.empty else ok.iloc[0]


def configurations(scenario, candidates: list[Candidate], batch_sizes: list[int],
                   capacity_types: list[str]) -> tuple[list[dict], list[str]]:
    """Every (device, batch size, capacity type) as scenario updates, and notes on what was left out."""
    items, notes, out = scenario.offline.job_items, [], []
    for cand in candidates:
        for b in batch_sizes:
            if b > cand.max_batch_size:
                continue
            if math.ceil(items / b) > MAX_JOB_BATCHES:
                notes.append(f"batch size {b}: {math.ceil(items / b):,} batches, beyond the {MAX_JOB_BATCHES:,} "
                             "simulated; left out")
                continue
            for kind in capacity_types:
                out.append({**cand.updates(), "batching.max_batch_size": b, "offline.capacity_type": kind})
    return out, sorted(set(notes))


def first_guess(scenario) -> int | None:
    """Replicas the closed form asks for with mean batch and cold-start times (None: the deadline cannot be
    met by any fleet), raised by the share of time spot reclaims are expected to cost."""
    off, b = scenario.offline, scenario.batching.max_batch_size
    service = build_service(scenario, np.random.default_rng(0))
    batch_s = service.mean_s(b)
    rows = cold_start_phases(scenario.cold_start, getattr(service, "profile", None),
                             getattr(scenario.service, "warmed_up", True))
    cold_s = sum(seconds for name, seconds, _ in rows if name != "readiness probe")  # no probe: sim/architectures
    k = offline_replicas_needed(off.job_items, b, batch_s, off.deadline_s, cold_s)
    if k is None:
        return None
    lost = off.spot_interruptions_per_hour / 3600.0 * (cold_s + batch_s / 2) if off.capacity_type == "spot" else 0.0
    return min(math.ceil(k / (1 - lost)) if lost < 0.5 else 2 * k, MAX_FLEET)  # a reclaim costs C + S/2 on average


def judge(table: pd.DataFrame, deadline_s: float) -> pd.DataFrame:
    """Add ``makespan_upper_s`` (upper 95% bound, or the value with one replication) and ``meets_deadline``."""
    table = table.copy()
    upper = table["makespan_s"]
    if "makespan_s_ci95_high" in table:
        upper = table["makespan_s_ci95_high"].where(table["makespan_s_ci95_high"].notna(), upper)
    table["makespan_upper_s"] = upper.astype(float)
    table["meets_deadline"] = table["deadline_met"].astype(bool) & table["makespan_upper_s"].le(deadline_s)
    return table


def plan_offline(scenario, candidates: list[Candidate], batch_sizes: list[int], capacity_types: list[str], *,
                 replications: int, seed: int, executor=None, checkpoint_dir=None, progress: bool = True) -> OfflinePlan:
    """Search every configuration's fewest replicas that meet ``scenario.offline.deadline_s``."""
    configs, notes = configurations(scenario, candidates, batch_sizes, capacity_types)
    searches = []
    for config in configs:
        guess = first_guess(updated(scenario, {**config, "fleet.replicas": 1}, "--param"))
        if guess is None:
            notes.append(f"{_label(config)}: one batch after the cold start already passes the deadline; left out")
        else:
            searches.append(FleetSearch(config, guess))
    rows, computed, reused, round_no = [], 0, 0, 0
    params = list(dict.fromkeys([*(k for c in configs for k in c), "fleet.replicas"]))
    while active := [s for s in searches if not s.done]:
        round_no += 1
        points = [{**s.config, "fleet.replicas": k} for s in active for k in s.points()]
        res = run_points(scenario, points, replications=replications, seed=seed, executor=executor,
                         checkpoint_dir=checkpoint_dir, progress=progress, params=params,
                         desc=f"plan-offline (round {round_no})")
        computed, reused = computed + res.computed, reused + res.reused
        table = judge(res.aggregate(), scenario.offline.deadline_s)
        rows.append(table)
        for search in active:
            mine = table[_matches(table, search.config)]
            search.observe(dict(zip(mine["fleet.replicas"].astype(int), mine["meets_deadline"])))
    table = pd.concat(rows, ignore_index=True).drop(columns=["point"]) if rows else pd.DataFrame()
    if not table.empty:
        table = table.drop_duplicates(subset=params, keep="last")
        estimates = {c.profile: c.estimate for c in candidates}
        table["estimate"] = (table["service.profile"].map(estimates).fillna(False).astype(bool)
                             if "service.profile" in table else candidates[0].estimate)
        table = rank(table)
    return OfflinePlan(table, fleets(table, searches, params), params, computed, reused, notes)


def _matches(table: pd.DataFrame, config: dict) -> pd.Series:
    mask = pd.Series(True, index=table.index)
    for key, value in config.items():
        mask &= table[key] == value
    return mask


def _label(config: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in config.items()
                     if k not in ("service.profile", "cost.usd_per_replica_hour"))


def rank(table: pd.DataFrame) -> pd.DataFrame:
    """Fleets meeting the deadline first, cheapest job first; ties: the shorter makespan."""
    table = table.sort_values(["meets_deadline", "cost_usd", "makespan_upper_s"], ascending=[False, True, True],
                              kind="stable", na_position="last").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def fleets(table: pd.DataFrame, searches: list[FleetSearch], params: list[str]) -> pd.DataFrame:
    """Per configuration, the row of its fewest replicas meeting the deadline (or of its largest fleet tried)."""
    picked = []
    for search in searches:
        mine = table[_matches(table, search.config)] if not table.empty else table
        if mine.empty:
            continue
        k = search.ok if search.ok is not None else int(mine["fleet.replicas"].max())
        picked.append(mine[mine["fleet.replicas"] == k].iloc[0])
    if not picked:
        return pd.DataFrame(columns=[*params, "meets_deadline", "cost_usd"])
    return rank(pd.DataFrame(picked).drop(columns=["rank"]))
