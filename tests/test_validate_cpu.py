"""The CPU validation suite: a real batching server against the simulator, with stated tolerances.

One profile is calibrated for the validation model with one torch thread (as the server runs it);
capacities come from that profile, so the loads mean the same on any machine. Then per batching
setting and load a ``capsim bench-serve`` run, and one ``capsim validate`` over all of them.
Tolerance at loads up to 85% of capacity: |p50 error| <= 10%, |p99 error| <= 20%.

Regenerate the committed results (docs/validation/cpu/) on a quiet machine with:
    CAPSIM_VALIDATION_OUT=docs/validation/cpu .venv/bin/python -m pytest tests/test_validate_cpu.py -m slow
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MODEL = "calibration.validation_model:wide_mlp"
THREADS = 1
SETTINGS = ((1, 0.0), (8, 2.0), (32, 5.0))  # (max batch size, max queue delay ms)
LOADS = (0.3, 0.6, 0.85)
MIN_REQUESTS, MIN_DURATION_S = 2000, 4.0


def capsim(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> dict:
    from sim.profile import load_profile
    from sim.validate import capacity_rps

    work = tmp_path_factory.mktemp("validation")
    profile = work / "profile-cpu-1t.json"
    top = max(b for b, _ in SETTINGS)
    capsim("calibrate", "--model", MODEL, "--threads", str(THREADS), "--batch-sizes",
           ",".join(map(str, range(1, top + 1))), "--samples", "60", "--warmup", "5", "--replay-batches", "40",
           "--skip-load", "--no-progress", "--out", str(profile))
    prof = load_profile(profile)
    runs = []
    for max_batch, delay_ms in SETTINGS:
        capacity = capacity_rps(prof, max_batch, 1)
        for load in LOADS:
            rate = round(load * capacity, 1)
            duration = max(MIN_DURATION_S, MIN_REQUESTS / rate)
            name = f"b{max_batch}-d{delay_ms:g}ms-load{round(load * 100)}"
            capsim("bench-serve", "--model", MODEL, "--threads", str(THREADS), "--max-batch-size", str(max_batch),
                   "--max-queue-delay-ms", str(delay_ms), "--rate", str(rate), "--duration", f"{duration:.2f}",
                   "--seed", "1", "--out", str(work / name))
            runs.append(str(work / name))
    out = work / "report"
    print(capsim("validate", *runs, "--profile", str(profile), "--out", str(out)))
    report = json.loads((out / "validation.json").read_text())
    target = os.environ.get("CAPSIM_VALIDATION_OUT")
    if target:
        _publish(out, profile, runs, Path(target))
    return report


def _publish(report_dir: Path, profile: Path, runs: list[str], target: Path) -> None:
    """validation.json, the QQ plots, the profile and each run's run.json (small files only)."""
    target.mkdir(parents=True, exist_ok=True)
    for f in [*report_dir.glob("*.png"), report_dir / "validation.json", profile]:
        shutil.copy(f, target / f.name)
    for run in map(Path, runs):
        shutil.copy(run / "run.json", target / f"{run.name}-run.json")


def test_every_run_was_served_completely(suite):
    assert len(suite["runs"]) == len(SETTINGS) * len(LOADS)
    for r in suite["runs"]:
        assert r["real"]["throughput_rps"] > 0
        assert r["real"]["mean_batch_size"] <= r["max_batch_size"]


def check(suite, key: str, bound: float) -> None:
    """Fail on a miss in an undisturbed run; a miss only in runs the machine disturbed is an xfail
    that names them (the claim is about a machine running this suite alone, as CI does)."""
    from sim.validate import MAX_LOAD

    misses = [r for r in suite["runs"] if r["load"] <= MAX_LOAD + 0.03 and not abs(r["error"][key]) <= bound]
    shown = [(r["run"], round(r["load"], 2), round(r["error"][key], 3)) for r in misses]
    clean = [m for m, r in zip(shown, misses) if not r["disturbed"]]
    assert not clean, f"{key} outside ±{bound:.0%} on undisturbed runs: {clean}"
    if misses:
        pytest.xfail(f"{key} outside ±{bound:.0%} only on runs the machine disturbed: {shown}")


@pytest.mark.parametrize("key", ["latency_p50_s", "latency_p99_s"])
def test_simulation_within_stated_tolerance_up_to_85_percent_load(suite, key):
    from sim.validate import TOLERANCES

    check(suite, key, TOLERANCES[key])


@pytest.mark.parametrize("key, bound", [("throughput_rps", 0.02), ("mean_batch_size", 0.15)])
def test_batch_size_and_throughput_agree(suite, key, bound):
    check(suite, key, bound)
