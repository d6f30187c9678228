"""First-call stalls: a model that stalls on the first call of each new shape.

A real dynamic-batching server (calibration.server) runs `test-stall` (sleeps 30 ms the first time it
sees a batch size) with NO warm-up on a replayed Poisson trace; the stalls set its p99. The profile
calibrated from the same model records those first calls; the simulator replaying the same arrival
times with `warmed_up: false` reproduces the real p99, while the same run with warm-up declared
does not (its p99 is far lower).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

import sim  # noqa: E402
from calibration.bench_serve import frames  # noqa: E402
from calibration.server import ServeConfig, run_server  # noqa: E402
from sim.cli import main as cli  # noqa: E402


@pytest.fixture(scope="module")
def stall_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stall")
    profile = tmp / "stall.json"
    assert cli(["calibrate", "--model", "test-stall", "--batch-sizes", "1,2,3,4,5,6,7,8", "--samples", "50",
                "--out", str(profile), "--skip-load"]) == 0
    rng = np.random.default_rng(21)
    arrivals = np.cumsum(rng.exponential(1 / 300.0, 2400))
    config = ServeConfig(model="test-stall", max_batch_size=8, max_queue_delay_s=0.002, warmup_rounds=0)
    real, _, _ = frames(run_server(config, arrivals), arrivals)
    trace = tmp / "trace.csv"
    pd.DataFrame({"arrival_s": arrivals}).to_csv(trace, index=False)
    return profile, trace, real


def simulated(profile, trace, warmed_up: bool):
    sc = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(trace)}},
        "service": {"type": "profile", "profile": str(profile), "warmed_up": warmed_up},
        "batching": {"max_batch_size": 8, "max_queue_delay_s": 0.002},
        "run": {"requests": 2400, "seed": 1},
    })
    return sim.run(sc).requests


def test_profile_records_the_stalls(stall_case):
    from sim.profiles.profile import load_profile

    p = load_profile(stall_case[0])
    for b in p.batch_sizes:
        assert p.first_call_s[b] >= 0.030
        assert p.first_call_s[b] > 20 * p.median_latency_s(b)


def test_simulation_reproduces_the_stalled_p99(stall_case):
    profile, trace, real = stall_case
    real_p99 = float(np.percentile(real["latency_s"].dropna(), 99))
    cold = simulated(profile, trace, warmed_up=False)
    warm = simulated(profile, trace, warmed_up=True)
    cold_p99 = float(np.percentile(cold["latency_s"], 99))
    warm_p99 = float(np.percentile(warm["latency_s"], 99))
    print(f"\nreal p99 {real_p99 * 1e3:.2f} ms | sim cold {cold_p99 * 1e3:.2f} ms | sim warmed-up {warm_p99 * 1e3:.2f} ms")
    assert real_p99 > 0.010  # the stalls do set the real p99
    assert abs(cold_p99 - real_p99) / real_p99 <= 0.35
    assert warm_p99 < 0.5 * real_p99
