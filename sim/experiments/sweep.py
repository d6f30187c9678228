"""Grid sweeps: many configurations × replications, resumable, on any executor.

A *point* is a dict of dotted scenario keys to values (``{"fleet.replicas": 4}``). Each (point,
replication) is one task, keyed by a hash of the scenario it simulates, the seed, the replication
and the SLO window; its result row (the params, every summary metric, and the SLO-violation
minutes) is written to a checkpoint directory as ``<key>.json`` the moment it completes. A rerun
of the same sweep reads those files back and simulates only what is missing, so an interrupted
sweep (Ctrl-C, a killed worker) loses at most the tasks that were running.

Arrivals depend only on (seed, replication) (``sim.runner.streams``): every configuration of one
sweep sees the same traffic in replication r (common random numbers).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sim.errors import CapsimError, ScenarioError
from sim.results.metrics import replicate_summary
from sim.scenario.load import scenario_from_dict, scenario_to_dict
from sim.scenario.model import Scenario

CHECKPOINT_VERSION = 1
META_COLUMNS = ("point", "replication", "seed", "key")


# ---------------------------------------------------------------- --param parsing
def parse_param(spec: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` or ``KEY=A..B`` / ``KEY=A..B:STEP`` (inclusive) into (key, values)."""
    if "=" not in spec:
        raise ScenarioError(f"--param {spec!r}: expected KEY=VALUES, e.g. fleet.replicas=2..8 or "
                            "batching.max_batch_size=1,8,32")
    key, text = (s.strip() for s in spec.split("=", 1))
    if not key or not text:
        raise ScenarioError(f"--param {spec!r}: both a key and values are needed")
    if ".." in text and "," not in text:
        return key, _parse_range(spec, text)
    values = [yaml.safe_load(v) for v in text.split(",") if v.strip()]
    if not values:
        raise ScenarioError(f"--param {spec!r}: no values")
    return key, values


def _parse_range(spec: str, text: str) -> list:
    body, _, step_text = text.partition(":")
    try:
        lo, hi = (yaml.safe_load(x) for x in body.split("..", 1))
        step = yaml.safe_load(step_text) if step_text else 1
    except (ValueError, yaml.YAMLError):
        lo = hi = step = None
    numbers = (lo, hi, step)
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in numbers) or step <= 0:
        raise ScenarioError(f"--param {spec!r}: a range is A..B or A..B:STEP with numbers and STEP > 0, "
                            "e.g. fleet.replicas=2..8 or batching.max_queue_delay_s=0..0.004:0.001")
    if hi < lo:
        raise ScenarioError(f"--param {spec!r}: empty range ({hi} < {lo})")
    count = int(math.floor((hi - lo) / step + 1e-9)) + 1
    if count > 10000:
        raise ScenarioError(f"--param {spec!r}: {count} values; at most 10000")
    if all(isinstance(x, int) for x in numbers):
        return list(range(lo, hi + 1, step))
    return [round(lo + i * step, 12) for i in range(count)]


def _parts(key: str) -> list[str | int]:
    """``a.b[0].c`` into ``["a", "b", 0, "c"]``."""
    parts: list[str | int] = []
    for piece in key.split("."):
        name, *indices = piece.split("[")
        parts.append(name)
        for index in indices:
            if not index.endswith("]") or not index[:-1].isdigit():
                raise ScenarioError(f"--param {key}: bad index [{index}; write e.g. autoscaler.metrics[0].target_utilization")
            parts.append(int(index[:-1]))
    return parts


def check_key(scenario: Scenario, key: str) -> None:
    """Raise a ScenarioError (with a did-you-mean) unless ``key`` is a settable dotted key."""
    _walk(scenario_to_dict(scenario), key)


def _walk(data: dict, key: str) -> tuple[object, str | int]:
    """The container holding ``key``'s last part, and that part (a dict key or a list index)."""
    node: object = data
    parts = _parts(key)
    for depth, part in enumerate(parts):
        where = ".".join(str(p) for p in parts[:depth]) or "the scenario"
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                raise ScenarioError(f"--param {key}: {where} has no item [{part}]")
        elif not isinstance(node, dict) or part not in node:
            allowed = sorted(node) if isinstance(node, dict) else []
            hint = difflib.get_close_matches(part, allowed, n=1, cutoff=0.6)
            text = f"--param {key}: no key {part!r} in {where}"
            if hint:
                text += f"; did you mean {hint[0]!r}?"
            raise ScenarioError(text + (f" (keys there: {', '.join(allowed)})" if allowed else ""))
        if depth == len(parts) - 1:
            return node, part
        node = node[part]  # type: ignore[index]
    raise ScenarioError(f"--param {key!r}: empty key")


def grid(params: dict[str, list]) -> list[dict]:
    """Every combination of the param values, in a fixed order (the last key varies fastest)."""
    keys = list(params)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(params[k] for k in keys))]


def configure(scenario: Scenario, point: dict) -> Scenario:
    """The scenario of one point (keys may index lists: ``autoscaler.metrics[0].target_utilization``);
    a key or value the scenario rejects is a ScenarioError naming the point."""
    data = scenario_to_dict(scenario)
    for key, value in point.items():
        node, last = _walk(data, key)
        node[last] = value  # type: ignore[index]
    try:
        return scenario_from_dict(data, base_dir=scenario.base_dir, source="scenario")
    except ScenarioError as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
        raise ScenarioError(f"--param {shown}: {str(exc).removeprefix('scenario: ')}") from None


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


def task_key(scenario_data: dict, base_dir: str, seed: int, replication: int, window_s: float | None) -> str:
    blob = json.dumps({"v": CHECKPOINT_VERSION, "scenario": scenario_data, "base_dir": base_dir, "seed": seed,
                       "replication": replication, "window_s": window_s}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def evaluate(task: Task) -> dict:
    """Simulate one task: the row with params, every summary metric and the SLO-violation minutes."""
    from sim.runner import run_once

    scenario = scenario_from_dict(task.scenario, base_dir=task.base_dir)
    requests, _, _, _, summary = run_once(scenario, task.seed, task.replication)
    horizon = scenario.run.duration_s or float(requests["arrival_s"].max())
    violation = slo_violation(requests, scenario.run.warmup_s, horizon, scenario.slo.latency_s,
                              scenario.slo.percentile, task.window_s)
    return {"point": task.point, "replication": task.replication, "seed": task.seed, "key": task.key,
            **task.params, **summary, **violation}


def slo_violation(requests: pd.DataFrame, warmup_s: float, horizon_s: float, slo_latency_s: float,
                  percentile: float, window_s: float | None = None) -> dict:
    """Minutes of SLO violation: windows whose ``percentile`` latency exceeds the SLO.

    A window violates when more than (100 − percentile)% of the requests arriving in it were not
    served within ``slo_latency_s`` (rejected and timed-out requests count as late). Default window:
    60 s, or a tenth of the measured period when that is shorter.
    """
    measured = horizon_s - warmup_s
    window = float(window_s or min(60.0, measured / 10.0))
    arrival = requests["arrival_s"].to_numpy()
    inside = (arrival >= warmup_s) & (arrival < horizon_s)
    late = ~((requests["outcome"].to_numpy() == "served") & (requests["latency_s"].to_numpy() <= slo_latency_s))
    n_windows = max(1, int(math.ceil(measured / window - 1e-9)))
    index = np.minimum(((arrival[inside] - warmup_s) // window).astype(np.int64), n_windows - 1)
    total = np.bincount(index, minlength=n_windows)
    bad = np.bincount(index, weights=late[inside], minlength=n_windows)
    violated = (total > 0) & (bad > (1 - percentile / 100.0) * total)
    return {"slo_window_s": window, "slo_windows": n_windows, "slo_windows_violated": int(violated.sum()),
            "slo_violation_min": float(violated.sum() * window / 60.0)}


def make_tasks(scenario: Scenario, points: list[dict], *, seed: int, replications: int,
               window_s: float | None = None, configured: list[Scenario] | None = None) -> list[Task]:
    """Tasks for every point × replication (points are validated first, so errors come before work)."""
    configured = configured or [configure(scenario, p) for p in points]
    tasks = []
    for i, (point, sc) in enumerate(zip(points, configured)):
        data = scenario_to_dict(sc)
        for r in range(replications):
            key = task_key(data, str(sc.base_dir), seed, r, window_s)
            tasks.append(Task(key, i, dict(point), data, str(sc.base_dir), seed, r, window_s))
    return tasks


# ---------------------------------------------------------------- checkpoint
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
    from sim.experiments.executors import SerialExecutor

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
    """Simulate the grid of ``params`` with ``replications`` each; resumable through ``checkpoint_dir``."""
    return run_points(scenario, grid(params), replications=replications, seed=seed, executor=executor,
                      checkpoint_dir=checkpoint_dir, progress=progress, window_s=window_s,
                      evaluate_fn=evaluate_fn, params=list(params))


def run_points(scenario: Scenario, points: list[dict], *, replications: int | None = None,
               seed: int | None = None, executor=None, checkpoint_dir: str | Path | None = None,
               progress: bool = True, window_s: float | None = None, params: list[str] | None = None,
               evaluate_fn: Callable[[Task], dict] = evaluate, desc: str = "sweep") -> SweepResult:
    """Like :func:`run_sweep` for an explicit list of points (which need not form a grid)."""
    reps = scenario.run.replications if replications is None else replications
    if reps < 1:
        raise ScenarioError(f"--replications = {reps}: must be ≥ 1")
    seed = scenario.run.seed if seed is None else seed
    tasks = make_tasks(scenario, points, seed=seed, replications=reps, window_s=window_s)
    checkpoint = Checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    records, computed = run_tasks(tasks, executor=executor, checkpoint=checkpoint, progress=progress,
                                  evaluate_fn=evaluate_fn, desc=desc)
    reused = len({t.key for t in tasks}) - computed
    names = params if params is not None else list(dict.fromkeys(k for p in points for k in p))
    frame = pd.DataFrame(records)
    if not frame.empty:
        frame = frame.sort_values(["point", "replication"], kind="stable").reset_index(drop=True)
    return SweepResult(frame, names, computed, reused, records)


def aggregate(records: list[dict], params: list[str]) -> pd.DataFrame:
    """Per point: params, replicate_summary over its replications (means, ``_ci95_low/_high``)."""
    by_point: dict[int, list[dict]] = {}
    for row in records:
        by_point.setdefault(row["point"], []).append(row)
    skip = set(META_COLUMNS) | set(params)
    out = []
    for point in sorted(by_point):
        rows = sorted(by_point[point], key=lambda r: r["replication"])
        summaries = [{k: (math.nan if v is None else v) for k, v in r.items() if k not in skip} for r in rows]
        out.append({"point": point, **{k: rows[0].get(k) for k in params}, **replicate_summary(summaries)})
    return pd.DataFrame(out)


def write_rows(result: SweepResult, path: str | Path) -> Path:
    """The sweep's rows as one Parquet file (params and metrics as columns)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True)
    if result.rows.empty:
        raise CapsimError("the sweep produced no rows")
    result.rows.to_parquet(path, index=False)
    return path
