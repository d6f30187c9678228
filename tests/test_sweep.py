"""Sweeps: --param parsing and errors, common random numbers, and resuming after interruptions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim.cli import main as cli_main
from sim.errors import CapsimError, ScenarioError
from sim.experiments.executors import LocalExecutor, SerialExecutor
from sim.experiments.sweep import evaluate, run_sweep
from sim.runner import run_once
from sim.scenario.keys import parse_param, updated
from sim.scenario.load import scenario_from_dict

SMALL = {
    "name": "small",
    "workload": {"arrivals": {"process": "poisson", "rate_rps": 300}},
    "service": {"type": "parametric", "base_s": 0.004, "per_item_s": 0.001, "distribution": "lognormal", "cv": 0.3},
    "batching": {"max_batch_size": 8, "max_queue_delay_s": 0.001},
    "fleet": {"replicas": 2, "router": "least_outstanding"},
    "slo": {"latency_s": 0.05, "percentile": 99},
    "cost": {"usd_per_replica_hour": 0.8},
    "run": {"duration_s": 10, "warmup_s": 1, "seed": 4},
}
PARAMS = {"fleet.replicas": [1, 2, 3], "batching.max_batch_size": [1, 8]}


@pytest.fixture
def scenario():
    return scenario_from_dict(SMALL)


@pytest.mark.parametrize("spec, key, values", [
    ("fleet.replicas=2..5", "fleet.replicas", [2, 3, 4, 5]),
    ("fleet.replicas=2..8:3", "fleet.replicas", [2, 5, 8]),
    ("batching.max_batch_size=1,8,32", "batching.max_batch_size", [1, 8, 32]),
    ("batching.max_queue_delay_s=0..0.003:0.001", "batching.max_queue_delay_s", [0, 0.001, 0.002, 0.003]),
    ("fleet.router=random,round_robin", "fleet.router", ["random", "round_robin"]),
])
def test_parse_param(spec, key, values):
    assert parse_param(spec) == (key, values)


@pytest.mark.parametrize("spec, message", [
    ("fleet.replicas", "expected KEY=VALUES"),
    ("fleet.replicas=5..2", "empty range"),
    ("fleet.replicas=a..3", "a range is A..B"),
    ("fleet.replicas=1..3:0", "STEP > 0"),
])
def test_parse_param_errors(spec, message):
    with pytest.raises(ScenarioError, match=message):
        parse_param(spec)


@pytest.mark.parametrize("param, message", [
    ("fleet.replica=1,2", "unknown key 'replica' in fleet; did you mean 'replicas'?"),
    ("batching.max_batch_size=0,4", "batching.max_batch_size = 0"),
    ("fleet.replicas=1...4", "fleet.replicas"),
])
def test_sweep_cli_bad_param_is_one_line_exit_2(tmp_path, capsys, param, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    code = cli_main(["sweep", str(path), "--param", param, "--out", str(tmp_path / "o.parquet"), "--workers", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err


def test_common_random_numbers(scenario, tmp_path):
    """Every configuration sees the same arrivals in replication r (and different ones across r)."""
    result = run_sweep(scenario, PARAMS, replications=2, executor=SerialExecutor(), progress=False)
    counts = result.rows.pivot(index="point", columns="replication", values="requests_total")
    assert (counts.nunique() == 1).all()
    assert counts[0].iloc[0] != counts[1].iloc[0]
    a = run_once(updated(scenario, {"fleet.replicas": 1}), 4, 1)[0]["arrival_s"].to_numpy()
    b = run_once(updated(scenario, {"fleet.replicas": 3, "batching.max_batch_size": 1}), 4, 1)[0]
    assert (a == b["arrival_s"].to_numpy()).all()


def test_sweep_rows_and_executor_independence(scenario, tmp_path):
    serial = run_sweep(scenario, PARAMS, replications=2, executor=SerialExecutor(), progress=False)
    pooled = run_sweep(scenario, PARAMS, replications=2, executor=LocalExecutor(2), progress=False)
    assert len(serial.rows) == 12 and {"fleet.replicas", "latency_p99_s", "slo_violation_min"} <= set(serial.rows)
    pd.testing.assert_frame_equal(serial.rows, pooled.rows)


CALLS: list[str] = []


def interrupting(limit: int):
    def fn(task):
        if len(CALLS) >= limit:
            raise KeyboardInterrupt
        CALLS.append(task.key)
        return evaluate(task)
    return fn


def test_interrupted_sweep_resumes_without_recomputing(scenario, tmp_path):
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(scenario, PARAMS, replications=2, executor=SerialExecutor(), checkpoint_dir=tmp_path / "ck",
                  progress=False, evaluate_fn=interrupting(5))
    done = set(CALLS)
    assert len(done) == 5 and len(list((tmp_path / "ck").glob("*.json"))) == 5
    CALLS.clear()
    resumed = run_sweep(scenario, PARAMS, replications=2, executor=SerialExecutor(), checkpoint_dir=tmp_path / "ck",
                        progress=False, evaluate_fn=interrupting(100))
    assert len(CALLS) == 7 and not done & set(CALLS)  # only the 7 missing runs, none twice
    assert (resumed.computed, resumed.reused) == (7, 5)
    fresh = run_sweep(scenario, PARAMS, replications=2, executor=SerialExecutor(), progress=False)
    pd.testing.assert_frame_equal(resumed.rows, fresh.rows)


def killing(task):
    if task.point == 3 and task.replication == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # a worker dies mid-sweep
    return evaluate(task)


def test_killed_worker_keeps_finished_points(scenario, tmp_path):
    ck = tmp_path / "ck"
    with pytest.raises(CapsimError, match="rerun the same command to resume"):
        run_sweep(scenario, PARAMS, replications=2, executor=LocalExecutor(2), checkpoint_dir=ck, progress=False,
                  evaluate_fn=killing)
    before = {p.name: p.stat().st_mtime_ns for p in ck.glob("*.json")}
    assert 0 < len(before) < 12
    resumed = run_sweep(scenario, PARAMS, replications=2, executor=LocalExecutor(2), checkpoint_dir=ck,
                        progress=False)
    assert (resumed.computed, resumed.reused) == (12 - len(before), len(before))
    assert all((ck / name).stat().st_mtime_ns == t for name, t in before.items())  # none rewritten


def test_sigint_then_resume_from_the_command_line(tmp_path):
    """A real Ctrl-C (SIGINT to the capsim process) halfway, then the same command again."""
    data = {**SMALL, "run": {**SMALL["run"], "duration_s": 40}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    out, ck = tmp_path / "sweep.parquet", tmp_path / "sweep.checkpoint"
    cmd = [sys.executable, "-m", "sim.cli", "sweep", str(path), "--param", "fleet.replicas=1..4",
           "--param", "batching.max_batch_size=1,4,8", "--replications", "2", "--workers", "2",
           "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1])
    deadline = time.time() + 60
    while time.time() < deadline and len(list(ck.glob("*.json"))) < 4 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    kept = len(list(ck.glob("*.json")))
    assert proc.returncode == 130 and "interrupted" in err, err
    assert 4 <= kept < 24 and not out.exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert f"simulated {24 - kept}, reused {kept}" in done.stdout
    assert len(pd.read_parquet(out)) == 24
