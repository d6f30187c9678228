"""dashboard.whatif (the dashboard's pure computations) and dashboard.fmt."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dashboard import whatif
from sim.errors import ScenarioError
from sim.scenario.keys import updated
from sim.scenario.load import load_scenario, scenario_from_yaml_text
from sim.scenario.model import mean_rate_rps
from sim.workload.arrivals import expected_count

EXAMPLE = "examples/fraud_mlp.yaml"


@pytest.fixture(scope="module")
def scenario():
    from pathlib import Path

    return load_scenario(Path(__file__).resolve().parents[1] / EXAMPLE)


def test_mmpp_pattern_keeps_the_mean_rate(scenario):
    arr = whatif.arrivals_for("mmpp", 600.0, 30.0, burst_ratio=5.0, mean_on_s=2.0, mean_off_s=8.0)
    s = updated(scenario, {"workload.arrivals": arr})
    assert mean_rate_rps(s.workload.arrivals) == pytest.approx(600.0)
    assert arr["rate_on_rps"] == pytest.approx(5 * arr["rate_off_rps"])


@pytest.mark.parametrize("pattern", ["poisson", "diurnal", "spike"])
def test_patterns_validate(scenario, pattern):
    s = updated(scenario, {"workload.arrivals": whatif.arrivals_for(pattern, 100.0, 30.0)})
    assert s.workload.arrivals.process == pattern


def test_trace_pattern_needs_a_file():
    with pytest.raises(ScenarioError, match="trace CSV"):
        whatif.arrivals_for("trace", 1.0, 1.0)


def test_parse_sizes():
    assert whatif.parse_sizes("16, 8 8", 32) == [8, 16]
    assert whatif.parse_sizes("", 32) == []
    with pytest.raises(ScenarioError, match="1..32"):
        whatif.parse_sizes("64", 32)
    with pytest.raises(ScenarioError, match="'x'"):
        whatif.parse_sizes("x", 32)


def test_yaml_text_errors_are_one_line():
    with pytest.raises(ScenarioError, match="not valid YAML at line 1"):
        scenario_from_yaml_text("a: [", source="up.yaml")
    with pytest.raises(ScenarioError, match="mapping of sections"):
        scenario_from_yaml_text("- 1\n")


def test_latency_cdf_is_monotone_and_reaches_the_max():
    lat = np.random.default_rng(0).exponential(0.01, 10_000)
    cdf = whatif.latency_cdf(lat)
    assert np.all(np.diff(cdf["latency_s"]) >= 0) and np.all(np.diff(cdf["fraction"]) > 0)
    assert cdf["latency_s"].iloc[-1] == lat.max()
    assert cdf["latency_s"].iloc[0] == lat.min()
    assert whatif.latency_cdf(np.empty(0)).empty


def test_windowed_latency_counts_every_arrival():
    n = 1000
    arrivals = np.sort(np.random.default_rng(1).uniform(0, 10, n))
    req = pd.DataFrame({"arrival_s": arrivals, "latency_s": np.full(n, 0.005),
                        "outcome": pd.Categorical(["served"] * (n - 10) + ["rejected"] * 10)})
    w = whatif.windowed_latency(req, 1.0, 10.0)
    assert len(w) == 10
    assert (w["arrival_rate_rps"] * 1.0).sum() == pytest.approx(n)
    assert (w["dropped_rps"]).sum() == pytest.approx(10)
    assert np.nanmax(w["latency_p99_s"]) == pytest.approx(0.005)


def test_timeline_window_is_round():
    assert whatif.timeline_window_s(30) == 0.5
    assert whatif.timeline_window_s(600) == 5.0
    assert whatif.timeline_window_s(1) == pytest.approx(0.01)


def test_cost_per_million():
    assert whatif.cost_per_million_usd(3.6, 1.0) == pytest.approx(1e6 / 1000)
    assert math.isnan(whatif.cost_per_million_usd(1.0, 0.0))


def test_chart_formulas_are_sim_theory_with_unstable_as_infinite():
    f = whatif.MEAN_SOJOURN_S
    assert f["mm1"](1.0, 2.0) == pytest.approx(1.0)  # L = 1/(mu - lambda)
    assert f["mm1"](2.0, 2.0) == math.inf and f["mmc"](5.0, 2.0, 2) == math.inf
    assert f["mmc"](1.0, 2.0, 1) == pytest.approx(f["mm1"](1.0, 2.0))
    assert f["md1"](1.0, 0.5) == pytest.approx(0.75)


def test_theory_curve_pools_better_than_split():
    frame = whatif.theory_curve(100.0, 4, [100.0, 200.0, 350.0])
    assert (frame["mmc_s"] <= frame["mm1_split_s"]).all()


def test_shortened_caps_requests(scenario):
    short = whatif.shortened(scenario, 10_000)
    assert expected_count(short) == pytest.approx(10_000)
    assert short.run.warmup_s < short.run.duration_s


def test_check_size_refuses_huge_runs(scenario):
    with pytest.raises(ScenarioError, match="dashboard allows"):
        whatif.check_size(updated(scenario, {"run.duration_s": 10_000}))


def test_check_size_counts_every_arrival_kind(scenario):
    """Stepped traffic has no single rate; the simulator's expected count still sizes it."""
    steps = {"process": "steps", "steps": [{"at_s": 0, "rate_rps": 100}, {"at_s": 10, "rate_rps": 200_000}]}
    big = updated(scenario, {"workload.arrivals": steps, "run.duration_s": 20})
    with pytest.raises(ScenarioError, match="about 2,001,000 requests"):
        whatif.check_size(big)
    whatif.check_size(updated(big, {"run.duration_s": 12}))


def test_keep_timing_stretches_the_loaded_spike():
    loaded = {"process": "spike", "base_rps": 1, "spike_rps": 5, "start_s": 120, "duration_s": 180, "ramp_s": 10}
    built = whatif.keep_timing(loaded, whatif.arrivals_for("spike", 400.0, 300.0, spike_factor=5), stretch=0.5)
    assert (built["start_s"], built["duration_s"], built["ramp_s"]) == (60, 90, 5)
    assert built["spike_rps"] == 2000
    diurnal = whatif.arrivals_for("diurnal", 400.0, 300.0)
    assert whatif.keep_timing(loaded, diurnal) == diurnal  # another process keeps its own timing


def test_default_spike_passes_capacity_within_the_request_cap(scenario):
    run = updated(scenario, {"run.duration_s": 40.0, "run.warmup_s": 4.0})
    factor = whatif.default_spike_factor(run, 6000.0, 65_000.0)
    assert 6000 * factor > 65_000  # the static fleet saturates
    spike = whatif.arrivals_for("spike", 6000.0, 40.0, spike_factor=factor)
    assert expected_count(updated(run, {"workload.arrivals": spike})) <= whatif.MAX_DASHBOARD_REQUESTS
    assert whatif.default_spike_factor(run, 6000.0, 20_000.0) == 5.0  # 1.5 x capacity when that fits
    assert whatif.default_spike_factor(run, 6000.0, 100.0) == 1.0


def test_profile_table_units_and_gain():
    from sim.profiles.profile import as_profile

    t = whatif.profile_table(as_profile("cpu-mlp-fp32"))
    assert t["throughput_gain"].iloc[0] == pytest.approx(1.0)
    assert (t["throughput_rps"] > 0).all()
    assert t["busy_time_saved"].max() < 1


def test_sweep_reports_errors_per_point(scenario):
    short = whatif.shortened(scenario, 2_000)
    frame = whatif.sweep(short, [{"batching.max_batch_size": 4}, {"batching.max_batch_size": 100_000}], seed=1)
    assert frame["error"].iloc[0] == "" and frame["latency_p99_s"].iloc[0] > 0
    assert frame["error"].iloc[1]


def test_fmt_units():
    from dashboard import fmt

    assert fmt.ms(0.00144) == "1.44 ms"
    assert fmt.ms(5e-5) == "50.0 µs"
    assert fmt.ms(float("nan")) == fmt.DASH
    assert fmt.usd(0.0348) == "$0.0348" and fmt.usd(12.29, "/h") == "$12.29/h"
    assert fmt.pct(1.0) == "100 %" and fmt.pct(0.9995) == "99.95 %"
    assert fmt.count(1, "replicas") == "1 replica" and fmt.count(2.5, "replicas") == "2.50 replicas"
    assert fmt.delta_pct(1.1, 1.0) == "+10.0 %" and fmt.delta_pct(1.0, 0.0) is None
    assert fmt.compact(682_347, "req") == "682k req" and fmt.compact(999_999) == "1M"
    assert fmt.compact(9_999, "req") == "9,999 req" and fmt.compact(None) == fmt.DASH
