"""Request logs and `capsim profile from-log` (sim/profiles/requestlog.py, fromlog.py, regime.py), and the
profile sections they add to the service model (capsim.profile/2: service_level phase random_time,
first_call): exact checks on hand-made logs and on runs the simulator itself produced."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
from test_validate import deterministic_profile, fake_run

import sim
from sim.cli import main
from sim.errors import CapsimError
from sim.profiles.fromlog import profile_from_logs
from sim.profiles.profile import load_profile, profile_from_dict, write_profile
from sim.profiles.requestlog import back_to_back_s, dispatch_states, read_request_log, served_log
from sim.serving.service import SpeedTrace
from sim.validation import h100

SCHEMA = json.loads((Path(sim.__file__).parent / "data" / "profile.schema.json").read_text())


def log_frame(batches, arrivals=None) -> pd.DataFrame:
    """A one-replica log from (start, end, size) batches; arrivals default to each batch's start."""
    rows = []
    for k, (start, end, size) in enumerate(batches):
        for j in range(size):
            arrival = start if arrivals is None else arrivals[k][j]
            rows.append({"arrival_s": arrival, "start_s": start, "end_s": end, "batch_size": size})
    return pd.DataFrame(rows).sort_values("arrival_s", kind="stable")


def log_of_result(result, max_batch: int, delay_s: float) -> pd.DataFrame:
    """A simulated run's served requests as a request log."""
    r = result.requests[result.requests["outcome"] == "served"].sort_values("arrival_s", kind="stable")
    return r[["arrival_s", "start_s", "end_s", "batch_size", "replica"]]


# ---------------------------------------------------------------- the format
def test_rows_of_one_batch_become_one_batch_per_replica(tmp_path):
    frame = pd.DataFrame({"arrival_s": [0.0, 0.1, 0.2, 0.3, 0.35], "start_s": [0.2, 0.2, 0.2, 0.4, 0.4],
                          "end_s": [0.3, 0.3, 0.3, 0.5, 0.45], "batch_size": [3, 3, 3, 1, 1], "replica": [0, 0, 0, 0, 1]})
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    log = read_request_log(path)
    assert log.batches[["replica", "start_s", "end_s", "size"]].values.tolist() == [[0, 0.2, 0.3, 3], [0, 0.4, 0.5, 1],
                                                                                  [1, 0.4, 0.45, 1]]
    assert log.max_batch_size == 3 and log.max_queue_delay_s == 0.0
    frame.to_parquet(tmp_path / "log.parquet", index=False)
    assert read_request_log(tmp_path / "log.parquet").batches.equals(log.batches)


def bad(frame: pd.DataFrame, change) -> pd.DataFrame:
    frame = frame.copy()
    change(frame)
    return frame


GOOD = log_frame([(0.01, 0.02, 2), (0.02, 0.03, 1), (0.04, 0.05, 3)],
                 arrivals=[[0.0, 0.005], [0.015], [0.03, 0.031, 0.035]])
BAD_LOGS = {
    "missing column": (GOOD.drop(columns=["end_s"]), ("no column end_s", "arrival_s, start_s, end_s, batch_size")),
    "NaN": (bad(GOOD, lambda f: f.__setitem__("start_s", f["start_s"].where(f.index != 1))),
            ("start_s in row 2 is nan", "finite")),
    "end before start": (bad(GOOD, lambda f: f.loc.__setitem__((2, "end_s"), 0.0)),
                         ("end_s in row 3 is 0", "before its start_s 0.02")),
    "starts before arriving": (bad(GOOD, lambda f: f.loc.__setitem__((5, "arrival_s"), 0.045)),
                               ("start_s in row 6 is 0.04", "before its arrival_s 0.045")),
    "unsorted": (GOOD.iloc[[1, 0, 2, 3, 4, 5]], ("arrival_s is not sorted", "row 2")),
    "inconsistent end": (bad(GOOD, lambda f: f.loc.__setitem__((0, "end_s"), 0.025)),
                         ("batch with start_s 0.01", "differ in end_s (0.02 to 0.025)")),
    "too few rows": (bad(GOOD, lambda f: f.__setitem__("batch_size", f["batch_size"].replace(3, 4))),
                     ("has 3 rows but batch_size 4",)),
    "overlap": (bad(GOOD, lambda f: f.loc.__setitem__((2, "end_s"), 0.045)),
                ("starts before the previous one ends (0.045)", "one batch runs at a time")),
    "fractional size": (bad(GOOD, lambda f: f.__setitem__("batch_size", f["batch_size"].astype(float) * 1.5)),
                        ("batch_size in row 3 is 1.5", "an integer >= 1")),
    "empty": (GOOD.iloc[:0], ("column 'arrival_s' is empty",)),
}


@pytest.mark.parametrize("case", BAD_LOGS, ids=list(BAD_LOGS))
def test_a_bad_log_is_one_line_and_exit_2(tmp_path, capsys, case):
    frame, says = BAD_LOGS[case]
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    assert main(["profile", "from-log", str(path), "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("capsim profile: error: ") and "\n" not in err and "Traceback" not in err, err
    for part in (str(path), *says):
        assert part in err, (part, err)
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("args, says", [
    (["--max-batch-size", "0"], "--max-batch-size = 0"),
    (["--max-batch-size", "2"], "--max-batch-size) = 2: the log holds a batch of 3"),
    (["--max-queue-delay-ms", "nan"], "--max-queue-delay-ms = nan"),
    (["--warm-sizes", "1,two"], "--warm-sizes = '1,two'"),
    (["--base", "no-such-profile"], "--base = 'no-such-profile'"),
    (["--speed", "level", "--base", "cpu-mlp-fp32"], "only with --speed regime"),
])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, args, says):
    path = tmp_path / "log.csv"
    GOOD.to_csv(path, index=False)
    assert main(["profile", "from-log", str(path), "--out", str(tmp_path / "p.json"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err and "Traceback" not in err, err


# ---------------------------------------------------------------- queue states
def test_back_to_back_is_the_queue_state_not_the_gap():
    """Batch 2's request was waiting when batch 1 ended (back to back, however long the loop took: 80 us);
    batch 3's arrived 20 us after batch 2 ended (idle, however short the gap)."""
    frame = log_frame([(0.0, 1.0, 1), (1.00008, 2.0, 1), (2.00005, 3.0, 1)], arrivals=[[0.0], [0.5], [2.00002]])
    states = dispatch_states(served_log(frame, "hand"))
    assert states["back_to_back"].tolist() == [False, True, False]
    assert states["late_s"].to_numpy() == pytest.approx([0.0, 80e-6, 30e-6])
    assert states["gap_s"].to_numpy()[1:] == pytest.approx([80e-6, 50e-6])
    assert back_to_back_s(states) == pytest.approx(80e-6)


def test_with_a_queue_delay_a_batch_is_due_when_full_or_the_oldest_has_waited():
    """B = 2, T = 10 ms. Batch 1: alone, due when it had waited 10 ms. Batch 2: due when its second request
    came (full). Batch 3: full before batch 2 ended, so back to back. Batch 4: its request waited at batch
    3's end but was due only 10 ms after it came (a timer wake-up after an idle wait)."""
    frame = log_frame([(0.0101, 0.0111, 1), (0.0161, 0.0171, 2), (0.01712, 0.0180, 2), (0.0291, 0.030, 1)],
                      arrivals=[[0.0], [0.015, 0.016], [0.0165, 0.0170], [0.0179]])
    states = dispatch_states(served_log(frame, "hand", max_batch_size=2, max_queue_delay_s=0.010))
    assert states["due_s"].to_numpy() == pytest.approx([0.010, 0.016, 0.017, 0.0279])
    assert states["back_to_back"].tolist() == [False, False, True, False]
    assert states["late_s"].to_numpy() == pytest.approx([100e-6, 100e-6, 20e-6, 1.2e-3])


# ---------------------------------------------------------------- estimation
def test_a_deterministic_log_gives_its_exact_batch_times_and_a_flat_regime(tmp_path):
    profile = deterministic_profile(tmp_path / "fixed.json", sizes=(1, 2, 4, 8, 16, 32))
    _, result = fake_run(tmp_path, profile, rate=1500, max_batch=8, delay_s=0.0)
    doc = profile_from_logs([served_log(log_of_result(result, 8, 0.0), "sim", max_batch_size=8)],
                            base=load_profile(profile), max_batch_size=16)
    p = profile_from_dict(doc)
    assert doc["schema"] == "capsim.profile/2" and p.batch_sizes == (*range(1, 17), 32)
    served = sorted(int(b) for b, n in result.batches["size"].value_counts().items() if n >= 20)
    for b in (*served, 12, 16, 32):  # served sizes exactly; beyond them the base profile's shape
        assert np.allclose(p.latency_s[b], 0.001 + 0.00025 * b, rtol=2e-3), b
    level = doc["service_level"]
    assert level["phase"] == "random_time" and np.allclose(level["path"], 0.0, atol=1e-3)
    assert doc["first_call"] is None and doc["calibration"]["size_curve"]["sizes"] == served
    jsonschema.validate(doc, SCHEMA)


def test_without_a_base_sizes_beyond_those_served_follow_a_line():
    batches = [(0.01 * k, 0.01 * k + 0.001 + 0.0005 * b, b) for k, b in enumerate([1, 2, 3, 4] * 30)]
    doc = profile_from_logs([served_log(log_frame(batches), "line", max_batch_size=8)])
    p = profile_from_dict(doc)
    assert [round(float(np.median(p.latency_s[b])), 6) for b in (4, 6, 8)] == [0.003, 0.004, 0.005]


def test_first_calls_of_cold_sizes_are_stalls_and_known_warm_sizes_are_not():
    sizes = [1, 2] * 30 + [3] + [1, 2, 3] * 30
    batches, t = [], 0.0
    for k, b in enumerate(sizes):
        d = 0.002 + (0.05 if k == 60 else 0.0)  # the first batch of 3 stalls 50 ms
        batches.append((t, t + d, b))
        t += d + 0.001
    unknown = profile_from_logs([served_log(log_frame(batches), "cold")])
    assert unknown["first_call"]["stall_s"] == pytest.approx([0.05], rel=1e-3)
    assert unknown["first_call"]["warm_sizes"] == [1, 2]  # their first batches did not stall
    known = profile_from_logs([served_log(log_frame(batches), "cold", warm_sizes=[1, 2, 4])])
    assert known["first_call"]["warm_sizes"] == [1, 2, 4]
    assert max(profile_from_dict(known).latency_s[3]) < 0.003  # the stall is not a batch time


# ---------------------------------------------------------------- the service model
def test_a_random_time_path_is_integrated_in_wall_time_and_wraps_around():
    # full speed for the first half of each second, half speed for the second half
    trace = SpeedTrace([0.0, 0.5], [0.0, math.log(2.0)], span_s=1.0)
    assert trace.circular_duration(0.25, 0.5) == pytest.approx(0.75)  # 0.25 s at rate 1, 0.25 work at rate 1/2
    assert trace.circular_duration(0.9, 0.5) == pytest.approx(0.55)  # 0.05 work by 1.0 s, then rate 1 again
    assert trace.circular_duration(0.0, 2.25) == pytest.approx(3.0)  # 0.75 work per second, whole periods
    assert trace.circular_duration(0.6, 0.0) == pytest.approx(0.0, abs=1e-12)


def from_log_profile(tmp_path, **sections) -> Path:
    doc = json.loads(deterministic_profile(tmp_path / "base.json").read_text())
    doc.update(schema="capsim.profile/2", **sections)
    return write_profile(doc, tmp_path / "v2.json")


def one_replica_batches(profile: Path, tmp_path, arrivals, *, warmed_up=True, replicas=1, seed=0, max_batch=1,
                        delay_s=0.0):
    trace = tmp_path / "arrivals.csv"
    trace.write_text("arrival_s\n" + "".join(f"{t!r}\n" for t in arrivals))
    return sim.run(sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "trace", "path": str(trace)}},
        "service": {"type": "profile", "profile": str(profile), "warmed_up": warmed_up},
        "batching": {"max_batch_size": max_batch, "max_queue_delay_s": delay_s},
        "fleet": {"replicas": replicas, "router": "round_robin"},
        "run": {"duration_s": 10.0, "seed": seed}})).batches


def test_each_replica_replays_the_regime_path_from_its_own_random_phase(tmp_path):
    profile = from_log_profile(tmp_path, service_level={
        "phase": "random_time", "path": [0.0, math.log(3.0)], "path_start_s": [0.0, 0.5], "span_s": 1.0,
        "method": "test"})
    arrivals = [0.05 * k for k in range(1, 40)]  # each replica: a batch every 0.1 s, for 1.9 s
    phases, differ = set(), False
    for seed in range(6):
        b = one_replica_batches(profile, tmp_path, arrivals, replicas=2, seed=seed)
        pd.testing.assert_frame_equal(b, one_replica_batches(profile, tmp_path, arrivals, replicas=2, seed=seed))
        slow = [tuple(((g["end_s"] - g["start_s"]) > 0.002).tolist()) for _, g in b.groupby("replica")]
        for pattern in slow:  # the path repeats every second: slow for 5 batches of 10, at the replica's phase
            assert sum(pattern[:10]) in (5, 6) and pattern[:9] == pattern[10:19]
        phases.update(slow)
        differ |= slow[0] != slow[1]
    assert len(phases) >= 4 and differ  # seeds and replicas draw their own phases


def test_first_call_stalls_are_drawn_per_replica_for_sizes_not_warm(tmp_path):
    profile = from_log_profile(tmp_path, first_call={"stall_s": [0.05], "warm_sizes": [1], "method": "test"})
    # on each of two replicas (round robin; a 10 ms queue delay fills pairs): a batch of 2, another, then of 1
    arrivals = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0]
    cold = one_replica_batches(profile, tmp_path, arrivals, warmed_up=False, replicas=2, max_batch=2, delay_s=0.01)
    extra = (cold["end_s"] - cold["start_s"]).round(6) - (0.001 + 0.00025 * cold["size"])
    stalled = cold.loc[extra.round(6) > 0]
    assert sorted(stalled["replica"]) == [0, 1] and set(stalled["size"]) == {2}  # once per replica, size 2 only
    assert extra.max() == pytest.approx(0.05)
    assert sorted(cold["size"]) == [1, 1, 2, 2, 2, 2]
    warm = one_replica_batches(profile, tmp_path, arrivals, warmed_up=True, replicas=2, max_batch=2, delay_s=0.01)
    assert ((warm["end_s"] - warm["start_s"]) < 0.01).all()


# ---------------------------------------------------------------- end to end
def test_from_log_on_the_command_line_with_a_base_profile(tmp_path, capsys):
    runs = h100.runs("bert")
    log = runs[3].log
    log = log[log["batch_id"] < log["batch_id"].iloc[6000]]  # whole batches
    log.to_parquet(tmp_path / "bert.parquet", index=False)
    base = write_profile(h100.base_profile_doc("bert"), tmp_path / "base.json")
    out = tmp_path / "served.json"
    assert main(["profile", "from-log", str(tmp_path / "bert.parquet"), "--base", str(base), "--max-batch-size", "16",
                 "--warm-sizes", "1,2,4,8,16,32,64,128,256", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "first calls: 4 stalls" in said and "in the base profile's shape: 9..16, 32, 64, 128, 256" in said
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["model"] == {"name": "bert", "dtype": "fp16", "compiled": False}
    assert doc["environment"]["device_name"] == "NVIDIA H100 80GB HBM3"
    assert min(doc["first_call"]["stall_s"]) > 0.05 and max(doc["first_call"]["stall_s"]) < 0.09
    assert 10e-6 < doc["calibration"]["back_to_back_s"] < 100e-6  # the loop's own gap, derived from the log
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"workload: {{arrivals: {{process: poisson, rate_rps: 800}}}}\n"
                        f"service: {{type: profile, profile: {out}, warmed_up: false}}\n"
                        "batching: {max_batch_size: 16}\nrun: {duration_s: 20, seed: 1}\n")
    assert main(["simulate", str(scenario), "--quiet"]) == 0  # longer than the log: the path repeats


def test_every_development_run_is_a_valid_request_log():
    for name in h100.SETS:
        for run in h100.runs(name):
            log = served_log(run.log, run.key, max_batch_size=int(run.settings["B"]),
                             max_queue_delay_s=float(run.settings["T"]))
            assert log.batches["size"].sum() == len(run.log) > 1000
            assert dispatch_states(log)["late_s"].min() >= 0.0


def test_from_run_gives_a_bench_serve_run_to_the_same_estimation(tmp_path):
    from sim.profiles.fromrun import profile_from_runs
    from sim.validation import validate as v

    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, result = fake_run(tmp_path, profile, rate=1500, delay_s=0.0)
    via_run = profile_from_runs([v.load_run(run_dir)], speed="regime")
    via_log = profile_from_logs([served_log(log_of_result(result, 8, 0.0), "log", max_batch_size=8)])
    assert [b["latency_s"] for b in via_run["batches"]] == [b["latency_s"] for b in via_log["batches"]]
    assert via_run["service_level"]["path"] == via_log["service_level"]["path"]
    with pytest.raises(CapsimError, match="speed = 'fast'"):
        profile_from_logs([served_log(log_of_result(result, 8, 0.0), "log")], speed="fast")
