"""Malformed scenarios through the CLI: exit code 2 and one line on stderr naming the key and the value.

The scenarios live in tests/data/bad/ (one file per mistake, traces and profiles beside them), so
each reads as an example of what a user might write.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import main

DATA = Path(__file__).parent / "data"
BAD = DATA / "bad"

# file stem -> substrings the one-line message must contain (the key, the bad value, the hint)
CASES = {
    "unknown_key": ["unknown key 'replica' in fleet", "did you mean 'replicas'?"],
    "unknown_section": ["unknown key 'fleets'", "did you mean 'fleet'?"],
    "negative_rate": ["workload.arrivals.rate_rps = -5", "greater than 0"],
    "zero_max_batch": ["batching.max_batch_size = 0", "greater than or equal to 1"],
    "negative_delay": ["batching.max_queue_delay_s = -0.002", "greater than or equal to 0"],
    "preferred_above_max": ["preferred_batch_sizes [16]", "max_batch_size (8)"],
    "unknown_router": ["fleet.router = 'least_loaded'", "least_outstanding"],
    "unknown_process": ["workload.arrivals.process = 'posson'", "did you mean 'poisson'?"],
    "trace_empty": ["workload.arrivals.path = ", "empty.csv", "is empty"],
    "trace_unsorted": ["workload.arrivals.path = ", "unsorted.csv", "not sorted", "row 3 (0.2)"],
    "trace_nan": ["workload.arrivals.path = ", "nan.csv", "row 2 is nan", "finite"],
    "trace_missing": ["workload.arrivals.path = ", "missing.csv", "not found"],
    "trace_no_column": ["workload.arrivals.path = ", "no column 'arrival_s'", "columns: time"],
    "invalid_yaml": ["not valid YAML at line 3"],
    "unknown_profile": ["profile = 'cpu-mlp-fp33'", "cpu-mlp-fp32"],
    "profile_no_batches": ["no_batches.json", "batches = []", "no usable batch sizes"],
    "max_batch_above_profile": ["batching.max_batch_size = 4096", "up to 256"],
    "warmup_not_below_duration": ["run", "warmup_s (2.0) must be below duration_s (2.0)"],
    "duration_and_requests": ["run", "not both", "duration_s = 2.0", "requests = 1000"],
    "duplicate_key": ["key 'run' appears twice", "lines 4 and 5"],
    "lognormal_without_cv": ["service", "'lognormal' needs cv"],
    "nan_rate": ["workload.arrivals.rate_rps = nan", "finite"],
    "not_a_mapping": ["a scenario is a mapping of sections, got list"],
}


def simulate_error(capsys, *argv: str) -> str:
    code = main(["simulate", *argv, "--quiet"])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("capsim simulate: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


def test_every_bad_file_has_a_case():
    assert {p.stem for p in BAD.glob("*.yaml")} == set(CASES)


@pytest.mark.parametrize("stem", sorted(CASES))
def test_bad_scenario(capsys, stem):
    message = simulate_error(capsys, str(BAD / f"{stem}.yaml"))
    for part in CASES[stem]:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_scenario_file(capsys):
    message = simulate_error(capsys, "no/such/scenario.yaml")
    assert "scenario file 'no/such/scenario.yaml' not found" in message


GOOD = BAD.parent / "traces" / "small.csv"


@pytest.fixture
def good_scenario(write_scenario):
    return str(write_scenario({
        "workload": {"arrivals": {"process": "trace", "path": str(GOOD)}},
        "service": {"type": "parametric", "base_s": 0.001},
        "run": {"duration_s": 1.0},
    }))


def test_the_good_scenario_runs(capsys, good_scenario):
    assert main(["simulate", good_scenario, "--quiet"]) == 0


@pytest.mark.parametrize(("setting", "parts"), [
    ("fleet.replicaz=3", ["fleet.replicaz = 3", "unknown key 'replicaz' in fleet", "did you mean 'replicas'?"]),
    ("fleets.replicas=3", ["fleets.replicas = 3", "unknown key 'fleets' in the scenario", "did you mean 'fleet'?"]),
    ("fleet.replicas=0", ["fleet.replicas = 0", "greater than or equal to 1"]),
    ("fleet.replicas", ["--set 'fleet.replicas'", "KEY=VALUE"]),
])
def test_bad_set(capsys, good_scenario, setting, parts):
    message = simulate_error(capsys, good_scenario, "--set", setting)
    for part in parts:
        assert part in message


def test_bad_replications(capsys, good_scenario):
    assert "--replications = 0" in simulate_error(capsys, good_scenario, "--replications", "0")


@pytest.mark.parametrize("stem", ["unknown_key", "trace_unsorted"])
def test_error_through_the_installed_command(stem):
    """The real entry point: exit status 2, one stderr line, nothing on stdout."""
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "simulate", str(BAD / f"{stem}.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert CASES[stem][0] in proc.stderr
    assert proc.stdout == ""
