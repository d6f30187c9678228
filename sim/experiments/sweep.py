"""Grid sweeps: many configurations × replications, resumable, on any executor.

A *point* is a dict of dotted scenario keys to values (``{"fleet.replicas": 4}``). Each (point,
replication) is one task, keyed by a hash of the scenario it simulates, the contents of every file
that scenario reads (profile, trace, manifest: ``sim.scenario.inputs``), the seed, the replication
and the SLO window; its result row (the params, every summary metric, and the SLO-violation
minutes) is written to a checkpoint directory as ``<key>.json`` the moment it completes. A rerun
of the same sweep reads those files back and simulates only what is missing, so an interrupted
sweep (Ctrl-C, a killed worker) loses at most the tasks that were running, and a changed profile or
trace changes the keys, so a resumed sweep never reuses a result of the old one. A grid is refused
before it is built when it holds more than ``MAX_RUNS`` runs.

Arrivals depend only on (seed, replication) (``sim.runner.streams``): every configuration of one
sweep sees the same traffic in replication r (common random numbers).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sim.architectures.offline import simulate_job
from sim.errors import CapsimError, ScenarioError
from sim.experiments.executors import SerialExecutor
from sim.results.files import writing_file
from sim.results.metrics import replicate_summary, slo_violation
from sim.runner import run_once, streams
from sim.scenario.inputs import input_files
from sim.scenario.keys import updated
from sim.scenario.load import scenario_from_dict, scenario_to_dict
from sim.scenario.model import Scenario

CHECKPOINT_VERSION = 2  # 2: keys include the contents of the files a scenario reads
META_COLUMNS = ("point", "replication", "seed", "key")
MAX_RUNS = 100_000  # points × replications one sweep or plan may run (docs/planner.md)


def check_runs(value_counts: list[int], replications: int, flag: str = "--param") -> int:
    """The number of runs of a grid with these numbers of values per key; more than ``MAX_RUNS`` is refused
    (before the grid is built)."""
    points = math.prod(value_counts)
    runs = points * replications
    if runs > MAX_RUNS:
        raise ScenarioError(f"{flag}: {points:,} points × {replications} replications = {runs:,} runs; at most "
                            f"{MAX_RUNS:,} runs are allowed: use fewer values or a coarser step (A..B:STEP)")
    return runs


def grid(params: dict[str, list]) -> list[dict]:
    """Every combination of the param values, in a fixed order (the last key varies fastest)."""
    keys = list(params)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(params[k] for k in keys))]


# ---------------------------------------------------------------- tasks and their results
@dataclass(frozen=True)
class Task:
    """One (point, replication): everything a worker needs, picklable for processes and Ray."""

    key: str
    point: int
    params: dict
    scenario: dict
    base_dir: str
    seed: int
    replication: int
    window_s: float | None


def task_key(scenario_data: dict, base_dir: str, seed: int, replication: int, window_s: float | None,
             inputs: dict[str, str]) -> str:
    """Hash of everything a run's result depends on; ``inputs``: scenario key → digest of the file it names."""
    blob = json.dumps({"v": CHECKPOINT_VERSION, "scenario": scenario_data, "base_dir": base_dir, "seed": seed,
                       "replication": replication, "window_s": window_s, "inputs": inputs},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (a file that cannot be read gets a marker: simulating it will say why)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def input_digests(scenario: Scenario, cache: dict[Path, str]) -> dict[str, str]:
    """Scenario key → digest of each file the scenario reads; ``cache`` holds each file's digest once."""
    out = {}
    for key, path in input_files(scenario).items():
        path = path.resolve()
        if path not in cache:
            cache[path] = file_digest(path)
        out[key] = cache[path]
    return out


def evaluate(task: Task) -> dict:
    """Simulate one task: the row with params, every summary metric and the SLO-violation minutes."""
    scenario = scenario_from_dict(task.scenario, base_dir=task.base_dir)
    if scenario.offline is not None:  # a batch job: its summary, no per-item rows and no latency SLO
        summary = simulate_job(scenario, streams(task.seed, task.replication), scenario.run.sample_interval_s).summary
        return {"point": task.point, "replication": task.replication, "seed": task.seed, "key": task.key,
                **task.params, **summary}
    requests, _, _, _, summary = run_once(scenario, task.seed, task.replication)
    horizon = scenario.run.duration_s or float(requests["arrival_s"].max())
    if scenario.llm is not None:  # TTFT and TPOT against their objectives, not request latency
        from sim.llm.metrics import late_requests

        violation = slo_violation(requests, scenario.run.warmup_s, horizon, scenario.slo.latency_s,
                                  scenario.llm.slo.percentile, task.window_s, late_requests(requests, scenario))
    else:
        violation = slo_violation(requests, scenario.run.warmup_s, horizon, scenario.slo.latency_s,
                                  scenario.slo.percentile, task.window_s)
    return {"point": task.point, "replication": task.replication, "seed": task.seed, "key": task.key,
            **task.params, **summary, **violation}


def make_tasks(labelled: list[tuple[dict, Scenario]], *, seed: int | None, replications: int | None,
               window_s: float | None = None) -> list[Task]:
    """Tasks for every (params, scenario) × replication; ``seed`` / ``replications`` None: each scenario's own.
    Every file the scenarios read is hashed once here, whatever the number of tasks."""
    tasks = []
    digests: dict[Path, str] = {}
    for i, (params, sc) in enumerate(labelled):
        data = scenario_to_dict(sc)
        inputs = input_digests(sc, digests)
        s = sc.run.seed if seed is None else seed
        for r in range(sc.run.replications if replications is None else replications):
            key = task_key(data, str(sc.base_dir), s, r, window_s, inputs)
            tasks.append(Task(key, i, dict(params), data, str(sc.base_dir), s, r, window_s))
    return tasks


# ---------------------------------------------------------------- checkpoint
CHECKPOINT_ENTRY = re.compile(r"[0-9a-f]{24}\.(json|tmp\d+)")


def is_checkpoint(directory: Path) -> bool:
    """True when ``directory`` holds nothing but checkpoint rows (so it may be resumed or discarded)."""
    return all(CHECKPOINT_ENTRY.fullmatch(entry.name) and entry.is_file() for entry in directory.iterdir())


def discard_checkpoint(directory: str | Path) -> int:
    """Delete the rows of a checkpoint (``--force``: simulate everything again); how many there were."""
    directory = Path(directory)
    if not directory.is_dir() or not is_checkpoint(directory):
        return 0
    rows = list(directory.iterdir())
    for row in rows:
        row.unlink(missing_ok=True)
    return len(rows)


class Checkpoint:
    """A directory of ``<task key>.json`` rows, each written atomically when its task completes."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def load(self, key: str) -> dict | None:
        path = self.dir / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def save(self, row: dict) -> None:
        path = self.dir / f"{row['key']}.json"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(_native(row)))
        os.replace(tmp, path)


def _native(row: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


# ---------------------------------------------------------------- running
@dataclass
class SweepResult:
    rows: pd.DataFrame  # one row per point × replication, ordered by (point, replication)
    params: list[str]
    computed: int
    reused: int
    records: list[dict]

    def aggregate(self) -> pd.DataFrame:
        """One row per point: the params and the mean and 95% CI of every metric over replications."""
        return aggregate(self.records, self.params)


def run_tasks(tasks: list[Task], *, executor=None, checkpoint: Checkpoint | None = None, progress: bool = True,
              evaluate_fn: Callable[[Task], dict] = evaluate, desc: str = "sweep") -> tuple[list[dict], int]:
    """Rows of every task (read from the checkpoint where present), and how many were simulated."""
    executor = executor or SerialExecutor()
    results: dict[str, dict] = {}
    for task in tasks:
        row = checkpoint.load(task.key) if checkpoint and task.key not in results else None
        if row is not None:
            results[task.key] = row
    todo = list({t.key: t for t in tasks if t.key not in results}.values())  # identical tasks run once
    bar = _progress(len(todo) + len(results), len(results), desc) if progress else None
    try:
        for row in executor.imap_unordered(evaluate_fn, todo):
            if checkpoint:
                checkpoint.save(row)
            results[row["key"]] = row
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [{**results[t.key], "point": t.point, **t.params} for t in tasks], len(todo)


def _progress(total: int, done: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="run", dynamic_ncols=True)


def run_sweep(scenario: Scenario, params: dict[str, list], *, replications: int | None = None,
              seed: int | None = None, executor=None, checkpoint_dir: str | Path | None = None,
              progress: bool = True, window_s: float | None = None,
              evaluate_fn: Callable[[Task], dict] = evaluate) -> SweepResult:
    """Simulate the grid of ``params`` with ``replications`` each; resumable through ``checkpoint_dir``.
    A grid of more than ``MAX_RUNS`` runs is refused before it is built."""
    check_runs([len(v) for v in params.values()],
               scenario.run.replications if replications is None else replications)
    return run_points(scenario, grid(params), replications=replications, seed=seed, executor=executor,
                      checkpoint_dir=checkpoint_dir, progress=progress, window_s=window_s,
                      evaluate_fn=evaluate_fn, params=list(params))


def run_points(scenario: Scenario, points: list[dict], *, replications: int | None = None,
               seed: int | None = None, executor=None, checkpoint_dir: str | Path | None = None,
               progress: bool = True, window_s: float | None = None, params: list[str] | None = None,
               evaluate_fn: Callable[[Task], dict] = evaluate, desc: str = "sweep") -> SweepResult:
    """Like :func:`run_sweep` for an explicit list of points (which need not form a grid); every point is
    validated before anything runs."""
    reps = scenario.run.replications if replications is None else replications
    if reps < 1:
        raise ScenarioError(f"--replications = {reps}: must be ≥ 1")
    labelled = [(p, updated(scenario, p, "--param")) for p in points]
    names = params if params is not None else list(dict.fromkeys(k for p in points for k in p))
    return run_scenarios(labelled, names, replications=reps, seed=scenario.run.seed if seed is None else seed,
                         executor=executor, checkpoint_dir=checkpoint_dir, progress=progress, window_s=window_s,
                         evaluate_fn=evaluate_fn, desc=desc)


def run_scenarios(labelled: list[tuple[dict, Scenario]], params: list[str], *, replications: int | None = None,
                  seed: int | None = None, executor=None, checkpoint_dir: str | Path | None = None,
                  progress: bool = True, window_s: float | None = None,
                  evaluate_fn: Callable[[Task], dict] = evaluate, desc: str = "sweep") -> SweepResult:
    """The one loop over many scenarios (sweeps, plans, ``capsim compare``, the dashboard's grids): each
    ``(params, scenario)`` × replication simulated on ``executor``, resumable through ``checkpoint_dir``.
    ``seed`` / ``replications`` None: each scenario's own."""
    tasks = make_tasks(labelled, seed=seed, replications=replications, window_s=window_s)
    checkpoint = Checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    records, computed = run_tasks(tasks, executor=executor, checkpoint=checkpoint, progress=progress,
                                  evaluate_fn=evaluate_fn, desc=desc)
    reused = len({t.key for t in tasks}) - computed
    frame = pd.DataFrame(records)
    if not frame.empty:
        frame = frame.sort_values(["point", "replication"], kind="stable").reset_index(drop=True)
    return SweepResult(frame, params, computed, reused, records)


def evaluate_or_error(task: Task) -> dict:
    """:func:`evaluate`, except that a scenario the simulator refuses gives a row with its ``error``
    (interactive grids show it in place of that point's figures)."""
    try:
        return evaluate(task)
    except CapsimError as exc:
        return {"point": task.point, "replication": task.replication, "seed": task.seed, "key": task.key,
                **task.params, "error": str(exc)}


def aggregate(records: list[dict], params: list[str]) -> pd.DataFrame:
    """Per point: params, replicate_summary over its replications (means, ``_ci95_low/_high``)."""
    by_point: dict[int, list[dict]] = {}
    for row in records:
        by_point.setdefault(row["point"], []).append(row)
    skip = set(META_COLUMNS) | set(params)
    out = []
    for point in sorted(by_point):
        rows = sorted(by_point[point], key=lambda r: r["replication"])
        failed = next((r["error"] for r in rows if r.get("error")), None)
        if failed:
            out.append({"point": point, **{k: rows[0].get(k) for k in params}, "error": failed})
            continue
        summaries = [{k: (math.nan if v is None else v) for k, v in r.items() if k not in skip} for r in rows]
        out.append({"point": point, **{k: rows[0].get(k) for k in params}, **replicate_summary(summaries)})
    return pd.DataFrame(out)


def write_rows(result: SweepResult, path: str | Path) -> Path:
    """The sweep's rows as one Parquet file (params and metrics as columns), written atomically."""
    if result.rows.empty:
        raise CapsimError("the sweep produced no rows")
    with writing_file(path) as tmp:
        result.rows.to_parquet(tmp, index=False)
    return Path(path)
