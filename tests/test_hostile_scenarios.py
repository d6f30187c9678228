"""Hostile but realistic scenarios and flags: one line naming the key and value, exit code 2, nothing
written, and never a hang, a huge message or a silently wrong result.

Each case is one a user could type: an alias bomb pasted into a scenario, a binary file given as a
scenario, a horizon mistyped by orders of magnitude, a service time in seconds instead of
milliseconds, a negative seed, a value that is not YAML.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import yaml

import sim
from sim.cli import main
from sim.errors import ScenarioError
from sim.scenario.keys import parse_param, updated
from sim.scenario.load import scenario_from_dict, scenario_from_yaml_text
from sim.workload.arrivals import arrival_times, expected_count

BASE = {
    "workload": {"arrivals": {"process": "poisson", "rate_rps": 200.0}},
    "service": {"type": "parametric", "base_s": 0.002},
    "batching": {"max_batch_size": 4, "max_queue_delay_s": 0.001},
    "run": {"duration_s": 2.0, "seed": 1},
}


def cli_error(capsys, *argv: str) -> str:
    """Run the CLI, expect exit code 2 and exactly one stderr line; return it."""
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert len(lines[0]) < 600, f"{len(lines[0])}-character message"
    return lines[0]


@pytest.fixture
def good(write_scenario):
    return str(write_scenario(BASE))


# ---------------------------------------------------------------- YAML a user pastes
BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", ["top", "name", "description"])
def test_an_alias_bomb_is_refused_at_once(capsys, write_scenario, where):
    text = BOMB + yaml.safe_dump({k: v for k, v in BASE.items()})
    if where != "top":  # the bomb's last level as the value of a string field
        text = BOMB + yaml.safe_dump(BASE) + f"{where}: *i\n"
    started = time.perf_counter()
    message = cli_error(capsys, "simulate", str(write_scenario(text)), "--quiet")
    assert "expands to more than" in message and "aliases" in message
    assert time.perf_counter() - started < 10


def test_a_recursive_alias_is_refused(capsys, write_scenario):
    message = cli_error(capsys, "simulate", str(write_scenario("a: &a [*a]\n")), "--quiet")
    assert "recursive alias" in message


def test_deep_nesting_is_refused(capsys, write_scenario):
    message = cli_error(capsys, "simulate", str(write_scenario("a: " + "[" * 5000 + "]" * 5000 + "\n")), "--quiet")
    assert "nested too deeply" in message or "not valid YAML" in message


def test_a_binary_file_is_not_a_scenario(capsys, tmp_path):
    path = tmp_path / "ls"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 40)
    message = cli_error(capsys, "simulate", str(path), "--quiet")
    assert str(path) in message and "not UTF-8" in message


def test_a_huge_file_is_refused_before_it_is_read(capsys, tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as fh:
        fh.truncate(20_000_000)  # sparse: 20 MB of zeros
    message = cli_error(capsys, "simulate", str(path), "--quiet")
    assert "20,000,000 bytes" in message


def test_exponent_numbers_are_numbers():
    sc = scenario_from_yaml_text(yaml.safe_dump(BASE).replace("200.0", "2e2"))
    assert sc.workload.arrivals.rate_rps == 200.0
    assert parse_param("run.duration_s=1e3,2E3")[1] == [1000.0, 2000.0]


def test_a_long_bad_value_is_not_echoed_whole(capsys, write_scenario):
    data = {**BASE, "name": ["x" * 100] * 10_000}
    message = cli_error(capsys, "simulate", str(write_scenario(data)), "--quiet")
    assert message.startswith("capsim simulate: error: ") and "name = " in message


# ---------------------------------------------------------------- flags
@pytest.mark.parametrize(("argv", "parts"), [
    (["--seed", "-5"], ["--seed = -5", "greater than or equal to 0", "run.seed"]),
    (["--replications", "5000"], ["--replications = 5000", "less than or equal to 1000"]),
    (["--replications", "0"], ["--replications = 0", "greater than or equal to 1"]),
    (["--set", "fleet.replicas=[1,"], ["--set fleet.replicas", "not valid YAML"]),
    (["--set", "fleet.replicas=!!python/object/apply:os.system ['true']"], ["--set fleet.replicas", "not valid YAML"]),
    (["--set", "name=!!binary aGVsbG8="], ["name = b'hello'"]),
])
def test_flags_go_through_the_scenario_checks(capsys, good, argv, parts):
    message = cli_error(capsys, "simulate", good, "--quiet", *argv)
    for part in parts:
        assert part in message, message


@pytest.mark.parametrize(("param", "part"), [
    ("fleet.replicas=[1,", "not valid YAML"),
    ("fleet.replicas=!!python/name:os.system", "not valid YAML"),
    ("fleet.replicas=1..nan", "a range is A..B"),
])
def test_bad_param_values(capsys, good, tmp_path, param, part):
    message = cli_error(capsys, "sweep", good, "--param", param, "--out", str(tmp_path / "s.parquet"), "--workers", "1")
    assert "--param" in message and part in message
    assert not (tmp_path / "s.parquet").exists()


def test_the_library_checks_its_arguments_too():
    sc = scenario_from_dict(BASE)
    with pytest.raises(ScenarioError, match="--seed = -5"):
        sim.run(sc, seed=-5)
    with pytest.raises(ScenarioError, match="--replications = 5000"):
        sim.run(sc, replications=5000)


# ---------------------------------------------------------------- sizes and horizons
@pytest.mark.parametrize("arrivals", [
    {"process": "poisson", "rate_rps": 6000},
    {"process": "steps", "steps": [{"at_s": 0, "rate_rps": 10}, {"at_s": 100, "rate_rps": 6000}]},
    {"process": "diurnal", "mean_rps": 6000, "amplitude": 0.5},
    {"process": "spike", "base_rps": 10, "spike_rps": 6000, "start_s": 10, "duration_s": 1e9},
    {"process": "mmpp", "rate_on_rps": 9000, "rate_off_rps": 3000, "mean_on_s": 1, "mean_off_s": 1},
])
def test_a_mistyped_horizon_is_refused_with_the_estimate(capsys, write_scenario, arrivals):
    data = {**BASE, "workload": {"arrivals": arrivals}, "run": {"duration_s": 1.0e12}}
    started = time.perf_counter()
    message = cli_error(capsys, "simulate", str(write_scenario(data)), "--quiet")
    assert "requests expected" in message and "GB" in message and "run.max_requests" in message
    assert time.perf_counter() - started < 10


def test_a_requests_count_above_the_limit_is_refused_and_the_limit_can_be_raised(write_scenario):
    data = {**BASE, "run": {"requests": 30_000_000}}
    with pytest.raises(ScenarioError, match="30,000,000 requests expected"):
        sim.run(scenario_from_dict(data))
    small = {**BASE, "run": {"requests": 500, "max_requests": 400}}
    with pytest.raises(ScenarioError, match="run.max_requests = 400"):
        sim.run(scenario_from_dict(small))
    assert sim.run(scenario_from_dict({**BASE, "run": {"requests": 500, "max_requests": 500}})).summary[
        "requests_total"] == 500


@pytest.mark.parametrize("arrivals", [
    {"process": "steps", "steps": [{"at_s": 0, "rate_rps": 0.003}]},
    {"process": "spike", "base_rps": 0.003, "spike_rps": 0.003, "start_s": 0, "duration_s": 1},
    {"process": "diurnal", "mean_rps": 0.003, "amplitude": 0.5, "period_s": 86400},
])
def test_time_varying_arrivals_are_not_truncated_after_1e9_seconds(arrivals):
    """They used to stop at 1e9 s: a 2e9 s horizon gave 4,194,304 arrivals of the expected 6 million."""
    sc = scenario_from_dict({**BASE, "workload": {"arrivals": arrivals}, "run": {"duration_s": 2e9}})
    times = arrival_times(sc, np.random.default_rng(0))
    expected = expected_count(sc)
    assert expected == pytest.approx(6e6, rel=0.01)
    assert abs(times.size - expected) < 5 * math.sqrt(expected)
    assert times[-1] > 1.99e9


def test_expected_count_agrees_with_the_draws():
    for arrivals in ({"process": "steps", "steps": [{"at_s": 0, "rate_rps": 100}, {"at_s": 5, "rate_rps": 300}]},
                     {"process": "spike", "base_rps": 100, "spike_rps": 500, "start_s": 2, "duration_s": 3,
                      "ramp_s": 1},
                     {"process": "diurnal", "mean_rps": 200, "amplitude": 0.8, "period_s": 7, "peak_at_s": 1}):
        sc = scenario_from_dict({**BASE, "workload": {"arrivals": arrivals}, "run": {"duration_s": 10.0}})
        counts = [arrival_times(sc, np.random.default_rng(s)).size for s in range(40)]
        assert np.mean(counts) == pytest.approx(expected_count(sc), rel=0.02), arrivals


@pytest.mark.timeout(60)
def test_a_service_time_in_seconds_not_milliseconds_ends_quickly(capsys, write_scenario, tmp_path):
    """base_s: 5000 (meant 5 ms) used to sample the time series until every request finished: no output
    after 60 s, memory growing. The run stops at horizon + run.drain_s; what is left is unfinished."""
    data = {**BASE, "service": {"type": "parametric", "base_s": 5000}, "run": {"duration_s": 30.0}}
    started = time.perf_counter()
    result = sim.run(scenario_from_dict(data))
    assert time.perf_counter() - started < 20
    outcome = result.requests["outcome"]
    assert set(outcome.unique()) <= {"unfinished"} and len(outcome) > 5000
    assert result.requests["end_s"].isna().all()
    s = result.summary
    assert s["unstable"] and s["requests_unfinished"] == s["requests_total"] and math.isnan(s["latency_p99_s"])
    assert result.timeseries["time_s"].max() <= 30.0 + 60.0 + 1e-9


def test_drain_s_bounds_the_run_and_every_request_has_one_outcome():
    data = {**BASE, "workload": {"arrivals": {"process": "poisson", "rate_rps": 4000.0}},
            "run": {"duration_s": 5.0, "drain_s": 0.5}}
    result = sim.run(scenario_from_dict(data))  # 2x overloaded: a backlog is left at 5 s
    req = result.requests
    counts = req["outcome"].value_counts()
    assert counts.sum() == len(req) and counts["unfinished"] > 0 and counts["served"] > 0
    assert req.loc[req["outcome"] == "served", "end_s"].max() <= 5.5 + 1e-9
    assert result.summary["unstable"]


def test_a_tiny_sample_interval_over_a_long_horizon_is_refused():
    data = {**BASE, "workload": {"arrivals": {"process": "poisson", "rate_rps": 0.001}},
            "run": {"duration_s": 1e6, "sample_interval_s": 0.001}}
    with pytest.raises(ScenarioError, match="run.sample_interval_s = 0.001"):
        sim.run(scenario_from_dict(data))


def test_served_throughput_never_exceeds_capacity_on_an_overloaded_run():
    data = {**BASE, "workload": {"arrivals": {"process": "poisson", "rate_rps": 5000.0}},
            "run": {"duration_s": 5.0, "drain_s": 30.0}}
    s = sim.run(scenario_from_dict(data)).summary
    assert s["unstable"] and s["capacity_rps"] == pytest.approx(2000.0)
    assert s["throughput_rps"] <= s["capacity_rps"] * 1.01


def test_updated_names_the_flag_key_and_value():
    sc = scenario_from_dict(BASE)
    with pytest.raises(ScenarioError, match=r"^--vary batching.max_batch_size = 0: must be greater"):
        updated(sc, {"batching.max_batch_size": 0}, "--vary")


def test_a_key_of_an_absent_optional_section_starts_it():
    sc = scenario_from_dict(BASE)
    cached = updated(sc, {"cache": {"policy": "lru", "capacity_entries": 10, "keys": {"source": "zipf",
                                                                                      "distinct_keys": 100}}})
    assert cached.cache.capacity_entries == 10
    assert updated(cached, {"cache.capacity_entries": 20}).cache.capacity_entries == 20
    with pytest.raises(ScenarioError, match=r"--set cache.capacity_entries = 20: cache.keys: missing required"):
        updated(sc, {"cache.capacity_entries": 20})
    with pytest.raises(ScenarioError, match="unknown key 'cach' in the scenario; did you mean 'cache'"):
        updated(sc, {"cach.capacity_entries": 20})
