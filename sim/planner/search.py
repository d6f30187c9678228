"""Capacity planning: the cheapest configuration whose latency percentile meets the SLO.

The search space is GPU type × max batch size × max queue delay × replicas (plus any dotted key
given with ``--param``, e.g. autoscaler settings). GPU types come from the shipped profiles of the
scenario's model on other devices, and from roofline estimates (``sim.profiles.roofline.estimate_profile``)
for catalog GPUs with no profile; estimates are labelled as such everywhere.

A configuration *meets the SLO* when no replication is unstable and the upper bound of the 95%
confidence interval of its SLO percentile over replications is at most the SLO latency (with one
replication, the point value). Three searches:

* ``grid``: every combination, simulated at the scenario's traffic.
* ``bisect`` (fixed fleets, Vidur-Search style): per (GPU, batching), binary search on the traffic
  one replica sustains (rates scaled, or a trace's ``time_scale``), then replicas = ⌈rate / that⌉,
  verified at full traffic with that count and walked down/up one replica at a time.
* ``optuna``: TPE over the same space (needs the optional ``optuna`` package).

An llm scenario (token-level serving) is searched the same way over ``sim.planner.llm.LlmSpace`` (GPU type ×
tensor parallelism × scheduler knobs × replicas); it meets its SLO when the upper bounds of its TTFT and TPOT
percentiles are within ``llm.slo`` (:func:`objectives`).

N+k sizing (``Evaluator.spare`` = k, ``capsim plan --spare k``): a fleet of n replicas is judged by a run
with n − k of them (k down, failed or being replaced) and priced at n, so the cheapest configuration
found keeps the SLO with any k replicas down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import CapsimError, ScenarioError
from sim.experiments.sweep import aggregate, grid, run_points
from sim.planner.candidates import Candidate
from sim.planner.llm import llm_replica_capacity_rps
from sim.runner import streams
from sim.scenario.keys import updated
from sim.scenario.load import scenario_to_dict
from sim.scenario.model import Scenario
from sim.serving.capacity import fleet_capacity_rps
from sim.serving.service import build_service
from sim.workload.arrivals import arrival_times
from sim.workload.conversations import turns_per_arrival

SEARCHES = ("grid", "bisect", "optuna")
DEFAULT_BATCH_SIZES = (1, 4, 8, 16, 32, 64)
DEFAULT_QUEUE_DELAYS_S = (0.0, 0.001, 0.002, 0.005)


# ---------------------------------------------------------------- search space
@dataclass
class Space:
    """What the planner varies: devices, batching, replicas and any extra dotted keys."""

    candidates: list[Candidate]
    batch_sizes: list[int]
    queue_delays_s: list[float]
    replicas: list[int] | None = None  # None: derived from capacity (grid) or searched (bisect)
    extra: dict[str, list] = field(default_factory=dict)

    def configs(self) -> list[dict]:
        """Every (device, batching, extra) combination as scenario updates, without replicas."""
        out = []
        for cand in self.candidates:
            for b in (b for b in self.batch_sizes if b <= cand.max_batch_size):
                for d in self.queue_delays_s if b > 1 else self.queue_delays_s[:1]:
                    for extra in grid(self.extra):
                        out.append({**cand.updates(), "batching.max_batch_size": b,
                                    "batching.max_queue_delay_s": d, **extra})
        return out

    def valid_configs(self, scenario: Scenario) -> tuple[list[dict], list[str]]:
        """The combinations the scenario accepts (e.g. min_replicas ≤ max_replicas), and a note on the rest."""
        good = []
        for config in self.configs():
            try:
                updated(scenario, config, "--param")
            except ScenarioError:
                continue
            good.append(config)
        skipped = len(self.configs()) - len(good)
        return good, ([f"{skipped} combinations the scenario rejects (e.g. min_replicas > max_replicas) were skipped"]
                      if skipped else [])

    def estimates(self, table: pd.DataFrame) -> pd.Series | bool:
        """Per row of a plan's table: whether its service profile is an estimate."""
        if "service.profile" not in table:
            return self.candidates[0].estimate
        by_profile = {c.profile: c.estimate for c in self.candidates}
        return table["service.profile"].map(by_profile).fillna(False).astype(bool)


def autoscaler_params(scenario: Scenario) -> dict[str, list]:
    """Values around the scenario's own for its autoscaler's min/max replicas and targets
    (``target_*`` at the top of the section or in ``metrics[i]``); nothing for a static fleet."""
    if not has_autoscaler(scenario):
        return {}
    section = scenario_to_dict(scenario)["autoscaler"]
    fields = [(f"autoscaler.{k}", k, v) for k, v in section.items()]
    for i, metric in enumerate(section.get("metrics") or []):
        fields += [(f"autoscaler.metrics[{i}].{k}", k, v) for k, v in metric.items()]
    out: dict[str, list] = {}
    for key, name, value in fields:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if name in ("min_replicas", "max_replicas"):
            values = sorted({max(1, int(value) // 2), int(value), int(value) * 2})
        elif name.startswith("target") and value > 0:
            values = sorted({round(min(v, 0.95) if value <= 1 else v, 4) for v in (value * 0.7, value, value * 1.3)})
        else:
            continue
        out[key] = [v for v in values if _accepts(scenario, key, v)]
    return out


def _accepts(scenario: Scenario, key: str, value) -> bool:

    try:
        updated(scenario, {key: value}, "--param")
    except ScenarioError:
        return False
    return True


def has_autoscaler(scenario: Scenario) -> bool:
    """True when the replica count can change at run time (an autoscaler other than ``static``)."""
    section = scenario_to_dict(scenario).get("autoscaler")
    return isinstance(section, dict) and section.get("type", "static") != "static"


def sized_by_pools(scenario: Scenario) -> bool:
    """True for disaggregated LLM serving: its fleet is its prefill and decode pools
    (``llm.disaggregation.*_replicas``, searched with --param), not ``fleet.replicas``."""
    return scenario.llm is not None and scenario.llm.disaggregation is not None


# ---------------------------------------------------------------- feasibility and ranking
def slo_key(scenario: Scenario) -> str:
    return f"latency_p{scenario.slo.percentile:g}_slo_s"


@dataclass(frozen=True)
class Objective:
    """A latency a plan is judged on: its summary figure, the column of its upper bound, and its target."""

    name: str  # names its Pareto front: cost_vs_<name>
    label: str  # as people read it: "p99", "TTFT p99"
    point: str  # the summary figure (mean over replications)
    upper: str  # the column judge() adds: its upper 95% bound
    target_s: float
    missing_meets: bool = False  # no value (the TPOT of one-token outputs): nothing to miss


def objectives(scenario: Scenario) -> list[Objective]:
    """The request latency percentile against ``slo``; for an llm scenario, TTFT and TPOT against ``llm.slo``
    (with ``workload.classes``, each class's TTFT and TPOT against its own objectives)."""
    if scenario.llm is not None:
        slo = scenario.llm.slo
        p = f"p{slo.percentile:g}"
        if scenario.workload.classes:  # each class against its own objectives (docs/llm.md)
            out = []
            for c in scenario.workload.classes:
                ttft, tpot = c.objectives(slo)
                k = f"class__{c.name}__"
                out += [Objective(f"{c.name}_ttft", f"{c.name} TTFT {p}", f"{k}ttft_{p}_slo_s", f"{k}ttft_upper_s", ttft),
                        Objective(f"{c.name}_tpot", f"{c.name} TPOT {p}", f"{k}tpot_{p}_slo_s", f"{k}tpot_upper_s", tpot,
                                  missing_meets=True)]
            return out
        return [Objective("ttft", f"TTFT {p}", f"ttft_{p}_slo_s", "ttft_upper_s", slo.ttft_s),
                Objective("tpot", f"TPOT {p}", f"tpot_{p}_slo_s", "tpot_upper_s", slo.tpot_s, missing_meets=True)]
    return [Objective("p99", f"p{scenario.slo.percentile:g}", slo_key(scenario), "slo_upper_s", scenario.slo.latency_s)]


def upper_bound(table: pd.DataFrame, key: str) -> pd.Series:
    """The upper 95% bound of ``key`` over replications (the value itself with one replication)."""
    high = f"{key}_ci95_high"
    if high not in table:
        return table[key].astype(float)
    return table[high].where(table[high].notna(), table[key]).astype(float)


def judge(table: pd.DataFrame, scenario: Scenario) -> pd.DataFrame:
    """Add each objective's upper bound (``slo_upper_s``; for an llm scenario ``ttft_upper_s`` and
    ``tpot_upper_s``), ``slo_ratio`` (the largest upper bound over its target: ≤ 1 meets) and ``meets_slo``."""
    table = table.copy()
    meets = ~table["unstable"].astype(bool)
    ratios = []
    for obj in objectives(scenario):
        upper = upper_bound(table, obj.point)
        table[obj.upper] = upper
        meets &= upper.le(obj.target_s) | (upper.isna() & obj.missing_meets)
        ratios.append(upper / obj.target_s)
    table["slo_ratio"] = pd.concat(ratios, axis=1).max(axis=1, skipna=True)
    table["meets_slo"] = meets
    return table


def rank(table: pd.DataFrame) -> pd.DataFrame:
    """Configurations meeting the SLO first, cheapest first; ties: fewer instances (an llm replica's GPUs),
    then lower latency against the SLO."""
    table = table.copy()
    replicas = table.get("replicas_mean", pd.Series(1.0, index=table.index))
    per = "gpus_per_replica" if "gpus_per_replica" in table else "fleet.instances_per_replica"
    inst = table.get(per, pd.Series(1, index=table.index)).fillna(1)
    table["instances"] = replicas.astype(float) * inst.astype(float)
    table = table.sort_values(["meets_slo", "cost_per_hour_usd", "instances", "slo_ratio"],
                              ascending=[False, True, True, True], kind="stable", na_position="last")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def pareto_front(table: pd.DataFrame, metric: str, cost: str = "cost_per_hour_usd") -> pd.DataFrame:
    """Stable configurations no other beats on both cost and ``metric`` (lower is better for both)."""
    ok = table[~table["unstable"].astype(bool) & table[metric].notna() & table[cost].notna()]
    ok = ok.sort_values([cost, metric], kind="stable")
    best, keep = math.inf, []
    for idx, value in ok[metric].items():
        if value < best:
            keep.append(idx)
            best = value
    return ok.loc[keep]


# ---------------------------------------------------------------- the searches
@dataclass
class Plan:
    table: pd.DataFrame  # ranked, one row per configuration simulated at full traffic
    params: list[str]
    search: str
    computed: int = 0
    reused: int = 0
    notes: list[str] = field(default_factory=list)
    bisections: pd.DataFrame | None = None

    @property
    def best(self) -> pd.Series | None:
        ok = self.table[self.table["meets_slo"]]
        return None if ok.empty else ok.iloc[0]


@dataclass
class Evaluator:
    """Runs lists of points (resumably, through one checkpoint) and keeps every aggregated row."""

    scenario: Scenario
    replications: int
    seed: int
    executor: object = None
    checkpoint_dir: Path | None = None
    progress: bool = True
    window_s: float | None = None
    computed: int = 0
    reused: int = 0
    params: dict = field(default_factory=dict)  # every dotted key varied so far, in order
    spare: int = 0  # N+k: replicas held down when a fleet is judged (priced with them)

    def evaluate(self, points: list[dict], desc: str = "plan", spared: list[bool] | None = None) -> pd.DataFrame:
        """Simulate and judge ``points``; those ``spared`` (default: every point with ``fleet.replicas``) run
        with ``spare`` replicas fewer and are reported with them (:func:`with_spares`)."""
        if not points:
            return pd.DataFrame()
        params = list(dict.fromkeys(k for p in points for k in p))
        self.params.update(dict.fromkeys(params))
        spared = [bool(self.spare) and "fleet.replicas" in p and (spared is None or spared[i])
                  for i, p in enumerate(points)]
        run = [{**p, "fleet.replicas": p["fleet.replicas"] - self.spare} if down else p
               for p, down in zip(points, spared)]
        res = run_points(self.scenario, run, replications=self.replications, seed=self.seed,
                         executor=self.executor, checkpoint_dir=self.checkpoint_dir, progress=self.progress,
                         window_s=self.window_s, params=params, desc=desc)
        self.computed += res.computed
        self.reused += res.reused
        table = judge(aggregate(res.records, params), self.scenario)
        return with_spares(table, spared, self.spare) if any(spared) else table


SPARE_SCALED = ("gpu_hours", "cost_usd", "cost_per_hour_usd", "cost_per_million_requests_usd", "replicas_mean")


def with_spares(table: pd.DataFrame, spared: list[bool], spare: int) -> pd.DataFrame:
    """Rows of fleets judged with ``spare`` replicas down, given back their full size: ``fleet.replicas``
    + spare, ``spare_replicas``, and the cost figures scaled by n / (n − spare)."""
    table = table.copy()
    rows = table["point"].map(lambda i: spared[int(i)]).to_numpy(dtype=bool)
    running = table.loc[rows, "fleet.replicas"].astype(float)
    scale = (running + spare) / running
    table["spare_replicas"] = np.where(rows, spare, 0)
    table.loc[rows, "fleet.replicas"] = (running + spare).astype(int)
    for key in SPARE_SCALED:
        for column in (key, f"{key}_ci95_low", f"{key}_ci95_high"):
            if column in table:
                table.loc[rows, column] = table.loc[rows, column] * scale
    return table


def grid_points(scenario: Scenario, space: Space, configs: list[dict], spare: int = 0) -> list[dict]:
    """Full grid; replicas default to ⌈rate/capacity⌉ .. 2⌈rate/capacity⌉ + 1 per configuration (+ ``spare``;
    given counts of ``spare`` replicas or fewer are left out: nothing would be left to serve)."""
    points = []
    rate = offered_rate_rps(scenario)
    for config in configs:
        if space.replicas is not None:
            counts = space.replicas
        elif has_autoscaler(scenario) or sized_by_pools(scenario):
            counts = [None]
        else:
            n_min = max(1, math.ceil(rate / replica_capacity_rps(updated(scenario, config, "--param")) * (1 + 1e-9)))
            counts = list(range(n_min + spare, 2 * n_min + 2 + spare))
        points += [config if n is None else {**config, "fleet.replicas": n} for n in counts if n is None or n > spare]
    return points


def plan(scenario: Scenario, space: Space, runner: Evaluator, search: str = "grid", trials: int = 40) -> Plan:
    """Search ``space`` for the cheapest configuration meeting ``scenario.slo``."""
    notes = []
    if runner.spare and has_autoscaler(scenario):
        raise ScenarioError(f"--spare {runner.spare}: N+k sizing searches fixed fleets; this scenario autoscales "
                            "(autoscaler.type = static to plan it)")
    if sized_by_pools(scenario):
        if runner.spare or space.replicas is not None:
            flag = f"--spare {runner.spare}" if runner.spare else "--replicas"
            raise ScenarioError(f"{flag}: with llm.disaggregation the fleet is its prefill and decode pools; search "
                                "them with --param llm.disaggregation.prefill_replicas=... (and decode_replicas)")
        if search == "bisect":
            notes.append("bisect sizes fleet.replicas; with llm.disaggregation the pools are given, so the grid "
                         "search ran instead (search them with --param llm.disaggregation.prefill_replicas=...)")
            search = "grid"
    if search == "bisect" and has_autoscaler(scenario):
        notes.append("bisect searches fixed fleets; this scenario autoscales, so the grid search ran instead")
        search = "grid"
    bisections = None
    configs, skipped = space.valid_configs(scenario)
    notes += skipped
    if not configs:
        raise ScenarioError("the search space is empty: no combination of the values is a valid scenario"
                            + "".join(f"; {note}" for note in skipped))
    if search == "grid":
        points = grid_points(scenario, space, configs, runner.spare)
        if not points:
            raise ScenarioError(f"--replicas: every count is at most --spare {runner.spare}; give larger counts")
        table = runner.evaluate(points, desc="plan (grid)")
    elif search == "bisect":
        table, bisections = bisect_search(scenario, configs, runner)
    elif search == "optuna":
        table = optuna_search(scenario, space, configs, runner, trials)
    else:
        raise CapsimError(f"--search = {search!r}: must be one of {', '.join(SEARCHES)}")
    if table.empty:  # bisect: no configuration met the SLO even at a twentieth of one replica's capacity
        raise ScenarioError("no configuration met the SLO even at 1/20 of one replica's estimated capacity: relax "
                            "the SLO or widen the space" + "".join(f"; {note}" for note in notes))
    params = [k for k in runner.params if k in table.columns and not k.startswith("workload.")]
    table = table.drop(columns=[c for c in table.columns if c.startswith("workload.")])
    table["estimate"] = space.estimates(table)
    return Plan(rank(table), params, search, runner.computed, runner.reused, notes, bisections)


# ---------------------------------------------------------------- bisection on the per-replica rate
def offered_rate_rps(scenario: Scenario) -> float:
    """Mean request rate of the scenario's traffic (replication 0 of its seed, over the horizon; with
    conversations, each arrival brings ``mean_turns`` requests)."""
    times = arrival_times(scenario, streams(scenario.run.seed, 0)["arrivals"])
    horizon = scenario.run.duration_s or float(times[-1])
    return times.size * turns_per_arrival(scenario) / horizon if times.size else 0.0


def replica_capacity_rps(scenario: Scenario) -> float:
    """Most requests/s one replica serves (every instance running its most efficient batch size; an llm
    replica: ``sim.planner.llm.llm_replica_capacity_rps``)."""
    if scenario.llm is not None:
        return llm_replica_capacity_rps(scenario)
    service = build_service(scenario, np.random.default_rng(0))
    return fleet_capacity_rps(scenario, service) / scenario.fleet.replicas


def scale_traffic(scenario: Scenario, factor: float) -> dict:
    """Dotted updates multiplying every rate of the arrival process by ``factor``."""
    a = scenario.workload.arrivals
    pre = "workload.arrivals."
    if a.process in ("poisson", "deterministic", "gamma"):
        return {pre + "rate_rps": a.rate_rps * factor}
    if a.process == "mmpp":
        return {pre + "rate_on_rps": a.rate_on_rps * factor, pre + "rate_off_rps": a.rate_off_rps * factor}
    if a.process == "steps":
        return {pre + "steps": [{"at_s": s.at_s, "rate_rps": s.rate_rps * factor} for s in a.steps]}
    if a.process == "diurnal":
        return {pre + "mean_rps": a.mean_rps * factor}
    if a.process == "spike":
        return {pre + "base_rps": a.base_rps * factor, pre + "spike_rps": a.spike_rps * factor}
    if a.process == "trace":
        return {pre + "time_scale": a.time_scale / factor}
    raise ScenarioError(f"workload.arrivals.process = {a.process!r}: the planner cannot scale it")


@dataclass
class Bisection:
    """Per configuration: bisect the traffic share f one replica sustains, then verify ⌈1/f⌉ replicas."""

    config: dict
    lo: float  # share of the full traffic known (or assumed) sustainable by one replica
    hi: float  # share known not sustainable
    tolerance: float = 0.03
    phase: str = "probe"
    replicas: int | None = None
    passed: dict = field(default_factory=dict)  # replicas -> meets SLO at full traffic
    steps: int = 0
    spare: int = 0  # N+k: replicas beyond those the traffic needs (the verify runs hold them down)
    usd_per_replica_hour: float = math.nan  # seen in its runs

    @property
    def walking_up(self) -> bool:
        """Verifying one replica more than a count that missed the SLO."""
        return self.phase == "verify" and self.passed.get(self.replicas - 1) is False

    def next_point(self, scenario: Scenario) -> dict | None:
        if self.phase in ("probe", "bisect"):
            f = self.lo if self.phase == "probe" else math.sqrt(self.lo * self.hi)
            return {**self.config, "fleet.replicas": 1, **scale_traffic(scenario, f), "_share": f}
        if self.phase == "verify":
            return {**self.config, "fleet.replicas": self.replicas}
        return None

    def observe(self, ok: bool, point: dict) -> None:
        self.steps += 1
        if self.phase == "probe":
            self.phase = "bisect" if ok else "done"
        elif self.phase == "bisect":
            f = point["_share"]
            self.lo, self.hi = (f, self.hi) if ok else (self.lo, f)
        elif self.phase == "verify":
            self.passed[self.replicas] = ok
            if ok and self.replicas > 1 + self.spare and (self.replicas - 1) not in self.passed:
                self.replicas -= 1
            elif not ok and (self.replicas + 1) not in self.passed and self.steps < 40:
                self.replicas += 1
            else:
                self.phase = "done"
            return
        if self.phase == "bisect" and self.hi / self.lo <= 1 + self.tolerance:
            self.phase, self.replicas = "verify", max(1, math.ceil(1 / self.lo - 1e-9)) + self.spare


def bisect_search(scenario: Scenario, configs: list[dict], runner: Evaluator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Vidur-style search, all configurations advancing in lock step (each round runs in parallel)."""
    rate = offered_rate_rps(scenario)
    states = []
    for config in configs:
        cap = replica_capacity_rps(updated(scenario, {**config, "fleet.replicas": 1}, "--param"))
        share = cap / rate if rate > 0 else math.inf
        if share >= 1:  # one replica may carry all the traffic: no rate search, verify one replica
            states.append(Bisection(config, lo=1.0, hi=1.0, phase="verify", replicas=1 + runner.spare,
                                    spare=runner.spare))
        else:
            states.append(Bisection(config, lo=share / 20, hi=share, spare=runner.spare))
    full, log, round_no, cheapest = [], [], 0, math.inf
    while True:
        for s in states:  # a walk up to a fleet dearer than one already verified cannot win: stop it
            if s.walking_up and s.usd_per_replica_hour * s.replicas > cheapest:
                s.phase = "done"
        active = [(s, s.next_point(scenario)) for s in states if s.phase != "done"]
        if not active:
            break
        round_no += 1
        points = [{k: v for k, v in p.items() if k != "_share"} for _, p in active]
        table = runner.evaluate(points, desc=f"plan (bisect round {round_no})",
                                spared=[s.phase == "verify" for s, _ in active])
        for (state, point), (_, row) in zip(active, table.iterrows()):
            verifying = state.phase == "verify"
            state.observe(bool(row["meets_slo"]), point)
            if row.get("replicas_mean"):
                state.usd_per_replica_hour = row["cost_per_hour_usd"] / row["replicas_mean"]
            if verifying:
                full.append(row)
                cheapest = min(cheapest, row["cost_per_hour_usd"]) if row["meets_slo"] else cheapest
            else:
                log.append({**state.config, "share": point["_share"], "rate_per_replica_rps": point["_share"] * rate,
                            "meets_slo": bool(row["meets_slo"]), **{o.upper: row[o.upper] for o in objectives(scenario)}})
    table = pd.DataFrame(full).drop(columns=["point"], errors="ignore")
    if not table.empty:
        keys = [k for k in runner.params if k in table.columns and not k.startswith("workload.")]
        table = table.drop_duplicates(subset=keys, keep="last")
    summary = pd.DataFrame([{**s.config, "max_rate_per_replica_rps": s.lo * rate if s.replicas else 0.0,
                             "replicas_derived": s.replicas} for s in states])
    return table.reset_index(drop=True), pd.concat([summary, pd.DataFrame(log)], keys=["result", "step"])


# ---------------------------------------------------------------- optuna
def optuna_search(scenario: Scenario, space: Space, configs: list[dict], runner: Evaluator,
                  trials: int) -> pd.DataFrame:
    """TPE over the configurations × replicas; a trial missing the SLO scores its cost plus a penalty."""
    try:
        import optuna
    except ImportError:
        raise CapsimError("--search optuna needs Optuna, which is not installed: pip install optuna "
                          "(or use --search grid or --search bisect)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    points = grid_points(scenario, space, configs, runner.spare)
    counts = sorted({p.get("fleet.replicas") for p in points if p.get("fleet.replicas") is not None})
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=runner.seed))
    batch = max(1, getattr(runner.executor, "workers", 1))
    rows = []
    while len(study.trials) < trials:
        asked = [study.ask() for _ in range(min(batch, trials - len(study.trials)))]
        chosen = []
        for t in asked:
            point = dict(configs[t.suggest_categorical("config", list(range(len(configs))))])
            if counts:
                point["fleet.replicas"] = t.suggest_int("replicas", counts[0], counts[-1])
            chosen.append(point)
        table = runner.evaluate(chosen, desc="plan (optuna)")
        for t, (_, row) in zip(asked, table.iterrows()):
            cost = float(row["cost_per_hour_usd"])
            study.tell(t, cost if row["meets_slo"] else cost + 1e6)
            rows.append(row)
    table = pd.DataFrame(rows).drop(columns=["point"], errors="ignore")
    keys = [k for k in runner.params if k in table.columns]
    return table.drop_duplicates(subset=keys).reset_index(drop=True)
