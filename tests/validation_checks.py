"""The CPU validation suite's checks, shared by the committed recording and the live run.

``validate_all_modes`` runs ``capsim validate`` four ways over a suite's run folders; a test module
defines a module-scoped ``suite`` fixture returning its reports (one per mode, plus ``run_dirs``) and a
class deriving from ``FidelityChecks``, which holds every assertion: on the committed recording
(tests/test_validation_recorded.py) they are deterministic, on a live run (tests/test_validate_cpu.py,
``make validate``) the machine's load is in them too.

Tolerance at loads up to 85%: |p50 error| <= 10%, |p99 error| <= 20%, asserted on every run with the
run's own server speed replayed moment by moment (``--from-run replay``: the simulator still forms every
batch and queue itself; a negative control with a wrong batching rule must miss), and on most runs with
the run's own service times at a random phase (``--from-run self``); reported (xfail on a miss) with a
back-to-back calibration and with the other runs' service times (held out), which the machine's drift
decides.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibration.validation_suite import LOADS, SETTINGS
from sim.cli import main as capsim_main
from sim.validation.validate import MAX_LOAD, TOLERANCES

MODES = ("calibrated", "from-run-replay", "from-run-self", "from-run-others")
# With the run's own speed replayed, every figure the simulator forms itself is held to a bound.
REPLAY_BOUNDS = {**TOLERANCES, "mean_batch_size": 0.10, "throughput_rps": 0.02}
OUTCOMES = {"served", "rejected", "timed_out"}


def validate_all_modes(run_dirs: list[Path], profile: Path, work: Path, replications: int, seed: int = 0,
                       plot: bool = False, what: str = "service times") -> dict:
    """``capsim validate`` of every run four ways; per mode the parsed validation.json, and ``run_dirs``.
    ``what`` names the simulated times in the progress lines (the LLM suite's are iteration times)."""
    reports: dict = {}
    for mode, how in (("calibrated", ["--profile", str(profile)]), ("from-run-replay", ["--from-run", "replay"]),
                      ("from-run-self", ["--from-run", "self"]), ("from-run-others", ["--from-run", "others"])):
        out = work / mode
        print(f"\n== {what}: {mode}")
        code = capsim_main(["validate", *map(str, run_dirs), *how, "--replications", str(replications), "--seed",
                       str(seed), "--out", str(out), *([] if plot else ["--no-plot"])])
        assert code == 0, f"capsim validate ({mode}) exited with {code}"
        reports[mode] = json.loads((out / "validation.json").read_text())
    reports["run_dirs"] = [str(p) for p in run_dirs]
    return reports


def publish(work: Path, profile: Path, run_dirs: list[Path], target: Path) -> None:
    """Per mode validation.json and QQ plots, the profile and each run's run.json (small files only)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(profile, target / profile.name)
    for mode in MODES:
        (target / mode).mkdir(exist_ok=True)
        for f in [*(work / mode).glob("*.png"), work / mode / "validation.json"]:
            shutil.copy(f, target / mode / f.name)
    for run in map(Path, run_dirs):
        shutil.copy(run / "run.json", target / f"{run.name}-run.json")


def recorded_runs(recording: Path) -> list[Path]:
    """The run folders of a committed recording, in its recording.json's order."""
    return [recording / name for name in json.loads((recording / "recording.json").read_text())["runs"]]


def validate_recording(recording: Path, profile_name: str, work: Path, replications: int, seed: int,
                       validate=validate_all_modes) -> dict:
    """``validate`` (this suite's or the LLM suite's ``validate_all_modes``) of a committed recording;
    with ``CAPSIM_VALIDATION_OUT`` set, the figures and QQ plots are published there."""
    target = os.environ.get("CAPSIM_VALIDATION_OUT")
    runs = recorded_runs(recording)
    reports = validate(runs, recording / profile_name, work, replications, seed, plot=bool(target))
    if target:
        publish(work, recording / profile_name, runs, Path(target))
    return reports


def check_recorded_on_a_quiet_machine(recording: Path) -> None:
    """Before the recording the 1-minute load average was as low as ``make validate`` requires."""
    from calibration.machine_load import MIN_IDLE_CORES

    facts = json.loads((recording / "recording.json").read_text())
    assert facts["load_average_1min"]["before"] <= facts["machine"]["cores"] - MIN_IDLE_CORES, facts


def check_run_recorded_every_request(run_dir: Path) -> None:
    """The run folder has its four files, and every scheduled request exactly one outcome and delivery."""
    for name in ("run.json", "requests.parquet", "batches.parquet", "loadgen.parquet"):
        assert (run_dir / name).is_file(), f"{run_dir.name}: {name} missing"
    run = json.loads((run_dir / "run.json").read_text())
    requests = pd.read_parquet(run_dir / "requests.parquet")
    loadgen = pd.read_parquet(run_dir / "loadgen.parquet")
    assert len(requests) == run["observed"]["requests"] > 0
    assert sorted(requests["id"]) == list(range(len(requests))), "request ids are not each recorded once"
    assert set(requests["outcome"].astype(str)) <= OUTCOMES, set(requests["outcome"].astype(str))
    assert sorted(loadgen["id"]) == list(range(len(requests))), "the load generator did not record every request"
    served = requests[requests["outcome"] == "served"]
    assert len(served) == run["observed"]["served"]
    assert np.isfinite(served["latency_s"]).all() and (served["latency_s"] > 0).all()
    batches = pd.read_parquet(run_dir / "batches.parquet")
    assert batches["size"].sum() == len(served), "served requests and batch sizes disagree"


def outside(record: dict, bounds: dict[str, float]) -> list[str]:
    """The figures of one validated run whose relative error is outside ``bounds`` (NaN is outside)."""
    return [key for key, bound in bounds.items() if not abs(record["error"][key]) <= bound]


def below_saturation(run: dict) -> bool:
    """The real server was busy ≤ 65% of the time (measured, not nominal: its batch times drift from
    the profile by up to 1.5x between runs, which can make a nominal 60% run nearly saturated)."""
    return run["real"]["busy_share"] <= 0.65


def profile_describes_server(run: dict) -> bool:
    """Below saturation, and the run's batches took within 10% of what the profile predicts for the
    same sizes (near saturation a few % of service time moves batch sizes by 20%)."""
    return below_saturation(run) and abs(run["service_ratio"] - 1) <= 0.10


def report(runs: list[dict], key: str, bound: float, label: str = "") -> list[tuple[str, float, float, bool]]:
    rows = [(r["run"], round(r["load"], 2), round(r["error"][key], 3), bool(r["disturbed"])) for r in runs]
    print(f"\n{label} {key} (sim - real) / real, tolerance ±{bound:.0%}: {rows}")
    return rows


def repeatability(suite: dict) -> dict[str, dict[str, float]]:
    """Per repeated run: the relative difference of the real server's own p50 and p99 between the run
    and its repeat (same setting, same arrival times, a few seconds apart)."""
    real = {r["run"]: r["real"] for r in suite["calibrated"]["runs"]}
    out = {}
    for name, fig in real.items():
        if name + "-repeat" in real:
            again = real[name + "-repeat"]
            out[name] = {k: (again[k] - fig[k]) / fig[k] for k in ("latency_p50_s", "latency_p99_s")}
    print("\nreal server against itself (repeat - run) / run:",
          {n: {k: round(v, 3) for k, v in d.items()} for n, d in out.items()})
    return out


def wrong_rule_replays(run_dirs: list[str], replay_runs: list[dict], work: Path, wrong_rules: dict) -> list[tuple]:
    """Each run replayed with its own speed but a changed batching rule, where the rule binds.

    ``wrong_rules`` maps a name to ``(change(batching) -> batching, binds(run, profile, loads, offered))``;
    per replay ``(run, rule, errors, missed)``, ``missed`` by ``outside`` of p50, p99 and mean batch size.
    """
    from sim.validation.validate import load_run, profile_from_run_for, validate_run

    bounds = {**TOLERANCES, "mean_batch_size": 0.10}
    loads = {r["run"]: r["load"] for r in replay_runs}
    offered = {r["run"]: r["offered_rps"] for r in replay_runs}
    outcomes = []
    for path in run_dirs:
        run = load_run(path)
        if run.settings["batching"]["max_batch_size"] == 1:
            continue
        profile = profile_from_run_for(run, [run], "replay", work)
        for rule, (change, binds) in wrong_rules.items():
            if not binds(run, profile, loads, offered):
                continue
            settings = copy.deepcopy(run.settings)
            settings["batching"] = change(settings["batching"])
            wrong = validate_run(dataclasses.replace(run, settings=settings), profile, work, 3, 0, plot=False)
            outcomes.append((run.name, rule, {k: round(wrong["error"][k], 3) for k in bounds},
                             bool(outside(wrong, bounds))))
    return outcomes


def _overloads_half_cap(run, profile, loads, offered) -> bool:
    from sim.profiles.profile import load_profile
    from sim.validation.validate import capacity_rps

    half = run.settings["batching"]["max_batch_size"] // 2
    return offered[run.name] >= 0.85 * capacity_rps(load_profile(profile), half, 1)


WRONG_RULES = {"no queue delay": (lambda b: {**b, "max_queue_delay_s": 0.0},
                                  lambda run, profile, loads, offered: loads[run.name] <= 0.45
                                  and run.settings["batching"]["max_queue_delay_s"] > 0),
               "half the max batch": (lambda b: {**b, "max_batch_size": b["max_batch_size"] // 2},
                                      _overloads_half_cap)}


class FidelityChecks:
    """Every assertion of the CPU validation suite, over the ``suite`` fixture of the deriving module."""

    def test_every_run_was_served_completely(self, suite):
        runs = suite["calibrated"]["runs"]
        assert len(runs) == len(SETTINGS) * (len(LOADS) + 1)
        for r in runs:
            assert r["real"]["throughput_rps"] > 0
            assert r["real"]["mean_batch_size"] <= r["max_batch_size"]

    @pytest.mark.parametrize("mode", MODES)
    def test_every_figure_is_reported_and_finite(self, suite, mode):
        for r in suite[mode]["runs"]:
            for key in ("latency_mean_s", "latency_p50_s", "latency_p90_s", "latency_p99_s", "mean_batch_size",
                        "throughput_rps"):
                assert np.isfinite(r["error"][key]), (r["run"], key)
            assert np.isfinite(r["service_ratio"])

    def test_latency_p50_within_tolerance_with_service_observed_in_the_run(self, suite):
        """The p50 tolerance, on service times observed under the traffic itself (observe -> calibrate
        -> replay, sim/profiles/fromrun.py): per batch size the run's own batch times, its idle response,
        dispatch delays and speed level; the simulator re-creates the batches, queues and every request's
        latency. Judged on every undisturbed run at a measured load <= 85% of the capacity those times
        give: at least 70% of them within ±10% (typically all; clean-clone CI runs have had one at +12.5%
        and +15.8% at 83-85% load, where that setting's real p50 moved 13-22% between two runs with the
        same arrivals). Back-to-back and held-out service times put 3-5 of 10 inside."""
        key = "latency_p50_s"
        rows = report(suite["from-run-self"]["runs"], key, TOLERANCES[key], "from-run self:")
        spread = repeatability(suite)
        judged = [row for row in rows if row[1] <= MAX_LOAD and not row[3]]
        assert len(judged) >= 4, f"too few runs judged (disturbed or above {MAX_LOAD:.0%} measured load): {rows}"
        within = [row for row in judged if abs(row[2]) <= TOLERANCES[key]]
        assert len(within) >= 0.7 * len(judged), (f"only {len(within)} of {len(judged)} runs within "
                                                  f"±{TOLERANCES[key]:.0%}: {judged}; the real server against "
                                                  f"itself: {spread}")

    def test_latency_p99_within_tolerance_with_service_observed_in_the_run(self, suite):
        """The p99 tolerance with the run's own service times, over the undisturbed runs at a measured
        load <= 85%. One run's p99 is one draw: at 60-85% load it is set by a few slow stretches of the
        machine meeting bursts of arrivals, and the real server does not repeat its own p99 (the repeat
        runs, same arrivals seconds apart, have differed by up to 313%). So a run counts as consistent
        when the real p99 lies within ±20% of the simulator's prediction or of the range its own
        replications span, and at least 70% of the runs must be consistent. Every figure is printed (how
        many are strictly within ±20% too); the p50 test is the one that fails a simulator that is off
        in general."""
        key = "latency_p99_s"
        runs = {r["run"]: r for r in suite["from-run-self"]["runs"]}
        rows = report(list(runs.values()), key, TOLERANCES[key], "from-run self:")
        spread = repeatability(suite)
        judged = [row for row in rows if row[1] <= MAX_LOAD and not row[3]]
        if len(judged) < 5:  # p99 of 2-4 runs on a machine this busy says nothing either way
            pytest.skip(f"only {len(judged)} undisturbed runs at <= {MAX_LOAD:.0%} measured load: the machine was "
                        f"too busy to judge p99 (figures: {rows})")
        ranges = {row[0]: [round(min(runs[row[0]]["sim_replications"][key]) * 1e3, 2),
                           round(runs[row[0]]["real"][key] * 1e3, 2),
                           round(max(runs[row[0]]["sim_replications"][key]) * 1e3, 2)] for row in judged}
        within = [row for row in judged if abs(row[2]) <= TOLERANCES[key]]
        consistent = [row for row in judged if row in within
                      or 0.8 * ranges[row[0]][0] <= ranges[row[0]][1] <= 1.2 * ranges[row[0]][2]]
        print(f"\np99 ms [simulated replications min, real, max]: {ranges}\nwithin ±20%: {len(within)} of "
              f"{len(judged)}; consistent: {len(consistent)} of {len(judged)}")
        assert len(consistent) >= 0.7 * len(judged), (f"only {len(consistent)} of {len(judged)} runs consistent: "
                                                      f"{judged}; {ranges}; the real server against itself: {spread}")

    @pytest.mark.parametrize("mode", ["calibrated", "from-run-others"])
    @pytest.mark.parametrize("key", ["latency_p50_s", "latency_p99_s"])
    def test_latency_with_service_measured_elsewhere_is_reported(self, suite, mode, key):
        """The same target with service times measured apart from the run: a back-to-back calibration
        (``capsim calibrate``) or the other runs of the suite (held out). On this shared 2-core VM the
        server's batch times move by 10-40% between runs a minute apart (``service_ratio``), and queueing
        at 60-85% load amplifies that, so misses here measure the machine's drift: every figure is
        printed, and a miss is an xfail naming the runs, never a silent pass."""
        rows = report(suite[mode]["runs"], key, TOLERANCES[key], f"{mode}:")
        misses = [row for row in rows if row[1] <= MAX_LOAD + 0.03 and not abs(row[2]) <= TOLERANCES[key]]
        if misses:
            pytest.xfail(f"service measured apart from the run drifted: {key} outside ±{TOLERANCES[key]:.0%} "
                         f"in {misses}")

    @pytest.mark.parametrize("key, bound, judged", [
        ("throughput_rps", 0.02, below_saturation),  # offered load is served by both
        ("mean_batch_size", 0.15, profile_describes_server),  # batch sizes follow service times
    ])
    def test_batch_size_and_throughput_agree(self, suite, key, bound, judged):
        runs = suite["calibrated"]["runs"]
        report(runs, key, bound, "calibrated:")
        misses = [(r["run"], round(r["error"][key], 3)) for r in runs
                  if judged(r) and not r["disturbed"] and not abs(r["error"][key]) <= bound]
        assert not misses, f"{key} outside ±{bound:.0%} on undisturbed runs where {judged.__name__}: {misses}"

    def test_batch_size_agrees_with_service_observed_in_the_run(self, suite):
        """With the run's own service times the batch sizes must agree at every load (within 10%)."""
        runs = suite["from-run-self"]["runs"]
        report(runs, "mean_batch_size", 0.10, "from-run self:")
        misses = [(r["run"], round(r["error"]["mean_batch_size"], 3)) for r in runs
                  if not r["disturbed"] and r["load"] <= 0.85 and not abs(r["error"]["mean_batch_size"]) <= 0.10]
        assert not misses, f"mean batch size outside ±10%: {misses}"

    def test_replaying_the_run_s_own_server_speed_meets_the_tolerance(self, suite):
        """The tolerance, given the machine: each run's server speed at every moment (every real batch's
        time over its size's median, after the idle response) is replayed at the same times and
        integrated over each simulated batch; arrivals and delivery delays are the run's own. The
        simulator still decides which requests form which batch, when batches start and every request's
        latency, so what this measures is the batching and queueing model. On every run at <= 85%
        measured load, disturbed ones included (the machine's hold-ups are in the replayed speed and
        delivery delays): p50 within ±10%, p99 within ±20%, mean batch size within ±10%, throughput
        within ±2%. (Nine suites, 99 runs: p50 within 2.2%, p99 within 5.3%; 9 more at 86-99% load
        within 2.3%.)"""
        runs = suite["from-run-replay"]["runs"]
        for key, bound in REPLAY_BOUNDS.items():
            report(runs, key, bound, "from-run replay:")
        judged = [r for r in runs if r["load"] <= MAX_LOAD]
        assert len(judged) >= 4, f"too few runs at <= {MAX_LOAD:.0%} measured load: {[r['run'] for r in runs]}"
        misses = [(r["run"], round(r["load"], 2), key, round(r["error"][key], 3)) for r in judged
                  for key in outside(r, REPLAY_BOUNDS)]
        assert not misses, f"outside the tolerance with the run's own speed replayed: {misses}"

    def test_replay_with_a_wrong_batching_rule_misses(self, suite, tmp_path):
        """Negative control: the replay is not a copy of the run, its figures follow the batching rules.
        Each wrong rule is judged where it binds, and every such run must miss the tolerance (p50 ±10%,
        p99 ±20% or mean batch size ±10%): no max-queue-delay wait (greedy batching, a common
        simplification) at <= 45% measured load, where batches form by waiting; half the max batch size
        where the offered load is >= 85% of what the run's server could carry with that cap (its replay
        profile's capacity), where the queue must grow. (At 60-85% load the wait hardly matters, batches
        fill first; a halved cap at 74% of its capacity moved b32 by only -9% in batch size.)"""
        outcomes = wrong_rule_replays(suite["run_dirs"], suite["from-run-replay"]["runs"], tmp_path, WRONG_RULES)
        print(f"\nreplay with a wrong batching rule (errors): {outcomes}")
        assert len(outcomes) >= 3, f"too few runs where a wrong rule binds: {[r[:2] for r in outcomes]}"
        unnoticed = [o for o in outcomes if not o[3]]
        assert not unnoticed, f"a wrong batching rule went unnoticed: {unnoticed}"
