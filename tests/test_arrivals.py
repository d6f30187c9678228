"""Arrival processes: rates, shapes, horizon and count, trace replay, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.workload.arrivals import arrival_times, rate_function


def times(arrivals: dict, *, duration_s: float | None = None, requests: int | None = None, seed: int = 0):
    run = {"duration_s": duration_s} if duration_s is not None else {"requests": requests}
    sc = sim.scenario_from_dict({"workload": {"arrivals": arrivals},
                                 "service": {"type": "parametric", "base_s": 0.001}, "run": run})
    return arrival_times(sc, np.random.default_rng(seed))


def test_poisson_rate_shape_and_no_truncation():
    t = times({"process": "poisson", "rate_rps": 1000}, duration_s=200.0)
    assert t.size == pytest.approx(200_000, rel=0.01)  # sd 0.22%
    assert (np.diff(t) >= 0).all() and t[-1] < 200.0 and t[0] >= 0
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.01)
    # Exponential tail intact: P(gap > 5/λ) = e^-5, about 1350 of 200k.
    assert (gaps > 5 / 1000).sum() == pytest.approx(200_000 * math.exp(-5), rel=0.15)


def test_count_gives_exactly_that_many():
    for arrivals in ({"process": "poisson", "rate_rps": 50}, {"process": "gamma", "rate_rps": 50, "cv": 2},
                     {"process": "deterministic", "rate_rps": 50},
                     {"process": "mmpp", "rate_on_rps": 100, "rate_off_rps": 0, "mean_on_s": 1, "mean_off_s": 1},
                     {"process": "steps", "steps": [{"at_s": 0, "rate_rps": 10}, {"at_s": 5, "rate_rps": 0},
                                                    {"at_s": 6, "rate_rps": 50}]}):
        t = times(arrivals, requests=1234)
        assert t.size == 1234 and (np.diff(t) >= 0).all(), arrivals["process"]


def test_deterministic_is_evenly_spaced():
    t = times({"process": "deterministic", "rate_rps": 4}, duration_s=2.0)
    np.testing.assert_allclose(t, [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])


def test_gamma_mean_and_cv():
    gaps = np.diff(times({"process": "gamma", "rate_rps": 500, "cv": 2.5}, requests=200_000))
    assert gaps.mean() == pytest.approx(1 / 500, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(2.5, rel=0.05)


def test_mmpp_long_run_rate_and_burstiness():
    spec = {"process": "mmpp", "rate_on_rps": 900, "rate_off_rps": 100, "mean_on_s": 0.5, "mean_off_s": 1.5}
    t = times(spec, duration_s=2000.0)
    assert t.size / 2000 == pytest.approx((900 * 0.5 + 100 * 1.5) / 2, rel=0.03)
    counts = np.histogram(t, bins=np.arange(0, 2000.5, 0.1))[0]
    assert counts.var() / counts.mean() > 3  # overdispersed: a Poisson process has index 1


def test_steps_follow_the_rate_in_each_segment():
    spec = {"process": "steps", "steps": [{"at_s": 0, "rate_rps": 100}, {"at_s": 100, "rate_rps": 0},
                                          {"at_s": 150, "rate_rps": 400}]}
    t = times(spec, duration_s=250.0)
    assert ((t >= 100) & (t < 150)).sum() == 0
    assert (t < 100).sum() == pytest.approx(10_000, rel=0.05)
    assert (t >= 150).sum() == pytest.approx(40_000, rel=0.03)


def test_diurnal_mean_and_peak():
    spec = {"process": "diurnal", "mean_rps": 200, "amplitude": 0.5, "period_s": 100, "peak_at_s": 25}
    t = times(spec, duration_s=1000.0)
    assert t.size / 1000 == pytest.approx(200, rel=0.02)
    near_peak = ((t % 100) >= 20) & ((t % 100) < 30)
    near_trough = ((t % 100) >= 70) & ((t % 100) < 80)
    assert near_peak.sum() / near_trough.sum() == pytest.approx(3.0, rel=0.15)  # (1 + 0.5)/(1 - 0.5)
    lam = rate_function(sim.scenario_from_dict({"workload": {"arrivals": spec}, "service": {
        "type": "parametric", "base_s": 0.001}, "run": {"duration_s": 1}}).workload.arrivals)
    assert float(lam(np.array(25.0))) == pytest.approx(300)


def test_spike_holds_its_top_rate():
    spec = {"process": "spike", "base_rps": 100, "spike_rps": 1000, "start_s": 50, "duration_s": 20, "ramp_s": 10}
    t = times(spec, duration_s=120.0)
    assert ((t >= 60) & (t < 80)).sum() == pytest.approx(20_000, rel=0.03)
    assert (t < 50).sum() == pytest.approx(5_000, rel=0.05)
    assert ((t >= 50) & (t < 60)).sum() == pytest.approx(5_500, rel=0.06)  # linear ramp: mean 550/s


def test_same_seed_same_arrivals():
    spec = {"process": "gamma", "rate_rps": 100, "cv": 1.5}
    np.testing.assert_array_equal(times(spec, requests=500, seed=4), times(spec, requests=500, seed=4))
    assert not np.array_equal(times(spec, requests=500, seed=4), times(spec, requests=500, seed=5))


def test_trace_replay(write_trace):
    path = write_trace([0.0, 0.5, 1.0, 3.0, 9.0], column="t_s")
    base = {"process": "trace", "path": str(path), "column": "t_s"}
    np.testing.assert_allclose(times(base, duration_s=5.0), [0.0, 0.5, 1.0, 3.0])
    np.testing.assert_allclose(times({**base, "time_scale": 0.5}, duration_s=5.0), [0.0, 0.25, 0.5, 1.5, 4.5])
    np.testing.assert_allclose(times(base, requests=2), [0.0, 0.5])


def test_trace_path_is_relative_to_the_scenario_file(write_trace, write_scenario):
    write_trace([0.1, 0.2], name="arrivals.csv")
    path = write_scenario({"workload": {"arrivals": {"process": "trace", "path": "arrivals.csv"}},
                           "service": {"type": "parametric", "base_s": 0.001}, "run": {"duration_s": 1}})
    result = sim.run(sim.load_scenario(path))
    np.testing.assert_allclose(result.requests["arrival_s"], [0.1, 0.2])
