"""`capsim validate` and sim.validation.validate without torch: a run the simulator itself produced must replay exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import sim
from sim.cli import main
from sim.profiles.profile import write_profile
from sim.validation import validate as v


def deterministic_profile(path, sizes=(1, 2, 4, 8)):
    """A measured-kind profile whose every batch of size b takes exactly 1 ms + 0.25 ms * b."""
    doc = {"schema": "capsim.profile/1", "kind": "measured", "environment": {"device": "cpu"},
           "model": {"name": "fixed", "dtype": "fp32"}, "host_overhead_s": [],
           "batches": [{"batch_size": b, "latency_s": [0.001 + 0.00025 * b] * 4} for b in sizes]}
    return write_profile(doc, path)


def fake_run(tmp_path, profile, *, rate=1500.0, max_batch=8, delay_s=0.002, replicas=1, seed=3):
    """A bench-serve run directory whose 'real' server is the simulator with a deterministic service."""
    scenario = sim.scenario_from_dict({
        "workload": {"arrivals": {"process": "poisson", "rate_rps": rate}},
        "service": {"type": "profile", "profile": str(profile)},
        "batching": {"max_batch_size": max_batch, "max_queue_delay_s": delay_s},
        "fleet": {"replicas": replicas}, "run": {"duration_s": 3.0, "seed": seed}})
    result = sim.run(scenario)
    out = tmp_path / f"run-{rate:g}"
    out.mkdir()
    result.requests.to_parquet(out / "requests.parquet", index=False)
    result.batches.to_parquet(out / "batches.parquet", index=False)
    settings = {"model": "fixed", "device": "cpu", "dtype": "fp32", "threads": 1, "seed": 0,
                "batching": {"max_batch_size": max_batch, "max_queue_delay_s": delay_s, "preferred_batch_sizes": []},
                "duration_s": 3.0, "replicas": replicas, "router": "round_robin" if replicas > 1 else None}
    (out / "run.json").write_text(json.dumps(settings))
    return out, result


def test_figures_on_a_hand_made_run():
    requests = pd.DataFrame({"arrival_s": [0.0, 0.0, 1.0, 1.0], "end_s": [1.0, 2.0, 2.0, 3.0],
                             "latency_s": [1.0, 2.0, 1.0, 2.0], "outcome": ["served"] * 4})
    batches = pd.DataFrame({"replica": [0, 0, 0], "start_s": [0.5, 1.5, 2.0], "end_s": [1.0, 2.0, 3.0],
                            "size": [1, 2, 1]})
    f = v.figures(requests, batches)
    assert f["latency_mean_s"] == 1.5 and f["latency_p50_s"] == 1.5
    assert f["mean_batch_size"] == pytest.approx(4 / 3)
    assert f["throughput_rps"] == pytest.approx(4 / 3) and f["busy_share"] == pytest.approx(2 / 3)


def test_a_run_replays_exactly_with_its_own_deterministic_service(tmp_path):
    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, _ = fake_run(tmp_path, profile)
    record = v.validate_run(v.load_run(run_dir), profile, tmp_path / "out", replications=1)
    for key in (*v.METRICS, "busy_share"):
        assert record["error"][key] == pytest.approx(0.0, abs=1e-9), key
    assert record["service_ratio"] == pytest.approx(1.0)
    assert record["within_tolerance"] is True
    assert (tmp_path / "out" / record["qq_png"]).stat().st_size > 1000


def test_a_slower_profile_shows_up_as_error_and_as_service_ratio(tmp_path):
    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, _ = fake_run(tmp_path, profile, rate=800)
    doc = json.loads(profile.read_text())
    for entry in doc["batches"]:
        entry["latency_s"] = [x * 1.3 for x in entry["latency_s"]]
    slower = write_profile(doc, tmp_path / "slower.json")
    record = v.validate_run(v.load_run(run_dir), slower, tmp_path / "out", replications=1, plot=False)
    assert record["service_ratio"] == pytest.approx(1 / 1.3)
    assert record["error"]["latency_p50_s"] > 0.1 and record["within_tolerance"] is False
    offered = len(pd.read_parquet(run_dir / "requests.parquet")) / 3.0
    assert record["load"] == pytest.approx(offered / (8 / (1.3 * 0.003)))  # capacity: batches of 8


def test_two_replicas_replay_with_the_same_router(tmp_path):
    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, _ = fake_run(tmp_path, profile, rate=3000, replicas=2)
    record = v.validate_run(v.load_run(run_dir), profile, tmp_path / "out", replications=1, plot=False)
    assert record["replicas"] == 2 and abs(record["error"]["latency_p99_s"]) < 1e-9


def test_cli_table_json_and_plots(tmp_path, capsys):
    profile = deterministic_profile(tmp_path / "fixed.json")
    runs = [fake_run(tmp_path, profile, rate=r)[0] for r in (500, 1500)]
    out = tmp_path / "report"
    assert main(["validate", *map(str, runs), "--profile", str(profile), "--out", str(out),
                 "--replications", "2"]) == 0
    printed = capsys.readouterr().out
    assert "Δ = (sim - real) / real" in printed and "run-1500" in printed and "2 of 2" in printed
    doc = json.loads((out / "validation.json").read_text())
    assert [r["run"] for r in doc["runs"]] == ["run-500", "run-1500"]
    assert doc["tolerances"] == {"latency_p50_s": 0.1, "latency_p99_s": 0.2}
    assert doc["overall"]["runs_within_tolerance"] == 2
    assert sorted(p.name for p in out.glob("*.png")) == ["run-1500-qq.png", "run-500-qq.png"]
    assert all(not isinstance(x, float) or math.isfinite(x) for x in doc["runs"][0]["error"].values())


@pytest.mark.parametrize("args, message", [
    (["--profile", "cpu-mlp-fp32", "--calibrate"], "exactly one"),
    ([], "exactly one"),
    (["--profile", "cpu-mlp-fp32", "--replications", "0"], "--replications"),
])
def test_bad_options(tmp_path, capsys, args, message):
    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, _ = fake_run(tmp_path, profile)
    assert main(["validate", str(run_dir), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["validate", str(tmp_path), "--profile", "cpu-mlp-fp32"]) == 2
    assert "not a bench-serve run directory" in capsys.readouterr().err


def test_calibration_covers_the_sizes_the_runs_used(tmp_path):
    from sim.validation.calibrated import calibration_sizes

    profile = deterministic_profile(tmp_path / "fixed.json")
    run_dir, result = fake_run(tmp_path, profile, max_batch=8)
    used = set(result.batches["size"].unique())
    sizes = calibration_sizes([v.load_run(run_dir)])
    assert used <= set(sizes) and {1, 2, 4, 8} <= set(sizes) and max(sizes) == 8
    assert np.all(np.diff(sizes) > 0)
