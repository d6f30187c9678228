"""The simulator against the committed recording of a CPU server that polls for work: deterministic.

tests/data/recordings/cpu-poll/ holds one run of the CPU validation suite served with
``capsim bench-serve --wait poll`` (``scripts/record_validation_cpu.py --wait poll --no-repeat``: the
1-thread validation MLP at b1/b8/b32 x 30/60/85% load, nine runs), and two calibrations made on the same
machine just before: ``--wait poll`` (the server's own way of waiting, ``profile-cpu-1t-poll.json``) and
``--wait block`` (``profile-cpu-1t.json``: how capsim measured the idle response before the waiting
behaviour was a property). ``capsim validate`` replays the runs three ways with a fixed seed: with each
run's own speed (the batching and queueing model, as for the blocking server), and with each profile.
The live suite of the same server is ``make validate WAIT=poll``. Figures: docs/validation.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from validation_checks import REPLAY_BOUNDS, check_run_recorded_every_request, outside, report

from calibration.machine_load import MIN_CPU_SHARE, MIN_IDLE_CORES
from sim.cli import main as capsim_main
from sim.validation.validate import MAX_LOAD, TOLERANCES

pytestmark = pytest.mark.slow  # about 20 s: nine runs validated three ways

RECORDING = Path(__file__).parent / "data" / "recordings" / "cpu-poll"
REPLICATIONS = 10
SEED = 0
RECORD = json.loads((RECORDING / "recording.json").read_text())
RUNS = [RECORDING / name for name in RECORD["runs"]]
PROFILES = {wait: RECORDING / name for wait, name in RECORD["profiles"].items()}


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("validation-recorded-poll")
    how = {"replay": ["--from-run", "replay"], "poll": ["--profile", str(PROFILES["poll"])],
           "block": ["--profile", str(PROFILES["block"])]}
    out = {}
    for mode, args in how.items():
        code = capsim_main(["validate", *map(str, RUNS), *args, "--replications", str(REPLICATIONS), "--seed",
                            str(SEED), "--no-plot", "--out", str(work / mode)])
        assert code == 0, f"capsim validate ({mode}) exited with {code}"
        out[mode] = json.loads((work / mode / "validation.json").read_text())["runs"]
    return out


def judged(runs: list[dict]) -> list[dict]:
    """Runs at <= 85% of the report's own capacity (3 points of slack, as the blocking suite's report)."""
    return [r for r in runs if r["load"] <= MAX_LOAD + 0.03]


@pytest.mark.parametrize("run_dir", RUNS, ids=lambda p: p.name)
def test_the_recording_holds_every_request(run_dir):
    check_run_recorded_every_request(run_dir)


def test_the_recording_was_made_on_a_quiet_machine():
    """Before it, the load average and the CPU probe passed ``make validate``'s bar."""
    cores = RECORD["machine"]["cores"]
    assert RECORD["load_average_1min"]["before"] <= cores - MIN_IDLE_CORES, RECORD["load_average_1min"]
    assert min(RECORD["machine_load_before"]["cpu_share"]) >= MIN_CPU_SHARE, RECORD["machine_load_before"]


def test_the_server_polled_and_each_profile_says_how_it_waited():
    assert RECORD["wait"] == "poll" and len(RUNS) == 9
    for run in RUNS:
        assert json.loads((run / "run.json").read_text())["server"]["wait"] == "poll", run.name
    for wait, path in PROFILES.items():
        doc = json.loads(path.read_text())
        assert doc["server"] == {"wait": wait} and doc["idle_response"]["ratio"], path.name


def test_replaying_the_run_s_own_server_speed_meets_the_tolerance(reports):
    """The batching and queueing model holds for the polling server as for the blocking one: with each
    run's speed replayed, p50 within 10%, p99 within 20%, batch size within 10%, throughput within 2%."""
    runs = reports["replay"]
    for key, bound in REPLAY_BOUNDS.items():
        report(runs, key, bound, "poll server, from-run replay:")
    misses = [(r["run"], round(r["load"], 2), key, round(r["error"][key], 3)) for r in runs if r["load"] <= MAX_LOAD
              for key in outside(r, REPLAY_BOUNDS)]
    assert not misses, f"outside the tolerance with the run's own speed replayed: {misses}"


@pytest.mark.parametrize("key", ["latency_p50_s", "latency_p99_s"])
def test_the_poll_calibration_predicts_the_polling_server(reports, key):
    """Calibrated with ``--wait poll``: p50 within 10% and p99 within 20% at <= 85% load on at least the
    runs it held on when recorded (a floor, so a regression fails); a miss is an xfail with its figures,
    never a silent pass (the machine's drift between calibration and run decides those)."""
    rows = report(reports["poll"], key, TOLERANCES[key], "poll server, --wait poll calibration:")
    runs = judged(reports["poll"])
    within = [r["run"] for r in runs if abs(r["error"][key]) <= TOLERANCES[key]]
    assert len(within) >= HELD[key], f"{key} within ±{TOLERANCES[key]:.0%} on {len(within)} of {len(runs)}: {rows}"
    misses = [row for row in rows if row[0] not in within and row[1] <= MAX_LOAD + 0.03]
    if misses:
        pytest.xfail(f"{key} outside ±{TOLERANCES[key]:.0%} with the poll calibration in {misses}")


HELD = {"latency_p50_s": 7, "latency_p99_s": 8}  # of the 8 judged runs, as recorded: see docs/validation.md


def test_the_poll_calibration_beats_the_block_calibration_on_the_polling_server(reports):
    """The before/after: the same server predicted from the profile calibrated its own way and from the one
    calibrated blocking; the mean |p50 error| over the judged runs is smaller with its own."""
    mean = {wait: float(np.mean([abs(r["error"]["latency_p50_s"]) for r in judged(reports[wait])]))
            for wait in ("poll", "block")}
    print(f"\nmean |p50 error| at <= 85% load: {mean}")
    assert mean["poll"] < mean["block"], mean


def test_throughput_agrees_below_saturation(reports):
    runs = reports["poll"]
    report(runs, "throughput_rps", 0.02, "poll server, --wait poll calibration:")
    misses = [(r["run"], round(r["error"]["throughput_rps"], 4)) for r in runs
              if r["real"]["busy_share"] <= 0.65 and not abs(r["error"]["throughput_rps"]) <= 0.02]
    assert not misses, misses
