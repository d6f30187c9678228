"""The simulator against a real GPU batching server, from the committed H200 recording: deterministic.

tests/data/recordings/gpu-h200/ holds what ``scripts/record_validation_gpu.py`` recorded on a lent NVIDIA
H200: per model (BERT-style encoder fp16, ResNet-50 fp16) a ``capsim calibrate --device cuda`` profile and
nine ``capsim bench-serve --device cuda`` runs (B 1, 8, 32; T 0, 0, twice the batch-1 time; 30/60/85% of a
pilot's capacity), a second lease's calibration and two runs of the encoder (how far the server repeats
itself across leases), and a ``--mode train`` profile of the MLP on CUDA.

Asserted: every request recorded; the profiles really came from CUDA (device, first calls, idle
response, load times); the batching and queueing model, given each run's own server speed, within the
tolerance on every run at <= 85% measured load, and a wrong batching rule misses. Predictions from
measurements apart from the run (the back-to-back calibration, a request log of another run, the other
runs) are printed per run and held to the counts docs/validation.md publishes, so a change that
predicts fewer runs fails; the counts are far from the target (issue #13), and the printed figures say
where. Publish the figures (docs/validation/gpu/: per model and mode validation.json and QQ plots) with
    CAPSIM_VALIDATION_OUT=docs/validation/gpu .venv/bin/python -m pytest tests/test_validation_gpu_recorded.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from validation_checks import (
    REPLAY_BOUNDS,
    WRONG_RULES,
    check_run_recorded_every_request,
    outside,
    publish,
    validate_all_modes,
    wrong_rule_replays,
)

from sim.cli import main as capsim_main
from sim.validation.validate import MAX_LOAD, TOLERANCES

pytestmark = pytest.mark.slow

RECORDING = Path(__file__).parent / "data" / "recordings" / "gpu-h200"
MODELS = ("bert-encoder-fp16", "resnet50-fp16")
LOG_RUN = "b8-d0ms-load60"  # the request log a user would calibrate from (as issue #13's leave-one-out)
REPLICATIONS, SEED = 5, 0
# Runs within p50 ±10% / p99 ±20% at <= 85% measured load, as published (docs/validation.md, GPU):
# (p50 within, p99 within) per model and way of predicting. A change may raise them, never lower them.
FLOORS = {
    "calibrated": {"bert-encoder-fp16": (4, 2), "resnet50-fp16": (4, 3)},
    "from-log": {"bert-encoder-fp16": (4, 4), "resnet50-fp16": (4, 5)},
}


def runs_of(model: str) -> list[Path]:
    folder = RECORDING / model
    return [folder / name for name in json.loads((folder / "recording.json").read_text())["runs"]]


def profile_of(model: str) -> Path:
    return RECORDING / model / f"profile-cuda-{model}.json"


@pytest.fixture(scope="module")
def suites(tmp_path_factory) -> dict:
    """Per model: ``capsim validate`` four ways, and with a profile made by ``capsim profile from-log`` of one
    run's request log over the back-to-back profile (the run itself left out of the judging)."""
    out, target = {}, os.environ.get("CAPSIM_VALIDATION_OUT")
    for model in MODELS:
        work = tmp_path_factory.mktemp(f"gpu-{model}")
        reports = validate_all_modes(runs_of(model), profile_of(model), work, REPLICATIONS, SEED, plot=bool(target))
        if target:
            publish(work, profile_of(model), runs_of(model), Path(target) / model)
        from_log = work / "from-log.json"
        assert capsim_main(["profile", "from-log", str(RECORDING / model / LOG_RUN / "requests.parquet"), "--base",
                            str(profile_of(model)), "--max-batch-size", "32", "--out", str(from_log)]) == 0
        others = [p for p in runs_of(model) if p.name != LOG_RUN]
        assert capsim_main(["validate", *map(str, others), "--profile", str(from_log), "--replications",
                            str(REPLICATIONS), "--seed", str(SEED), "--out", str(work / "from-log"), "--no-plot"]) == 0
        reports["from-log"] = json.loads((work / "from-log" / "validation.json").read_text())
        out[model] = reports
    return out


def judged(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["load"] <= MAX_LOAD and not r["disturbed"]]


def within(runs: list[dict], key: str) -> int:
    return sum(abs(r["error"][key]) <= TOLERANCES[key] for r in judged(runs))


@pytest.mark.parametrize("run_dir", [p for m in MODELS for p in runs_of(m)]
                         + sorted((RECORDING / "bert-encoder-fp16-lease2").glob("b*")), ids=lambda p: p.parent.name
                         + "/" + p.name)
def test_the_recording_holds_every_request(run_dir):
    check_run_recorded_every_request(run_dir)


@pytest.mark.parametrize("model", [*MODELS, "bert-encoder-fp16-lease2"])
def test_the_profiles_were_measured_on_the_gpu(model):
    """What ``capsim calibrate --device cuda`` wrote: the device, a first call per size (a new shape
    costs tens of ms on a GPU), the idle response, and the load times of the model."""
    name = model.removesuffix("-lease2")
    doc = json.loads((RECORDING / model / f"profile-cuda-{name}.json").read_text())
    env = doc["environment"]
    assert env["device"] == "cuda" and "H200" in env["device_name"] and env["cuda"], env
    assert len(doc["batches"]) == 32 and all(b["first_call_s"] > max(b["latency_s"]) for b in doc["batches"][:1])
    assert len(doc["idle_response"]["ratio"]) >= 5
    load = doc["load"]
    assert load["host_to_device_s"] > 0 and load["runtime_start_s"] > load["device_context_s"] > 0, load


def test_the_training_profile_was_measured_on_the_gpu():
    from sim.profiles.training import load_training_profile

    path = RECORDING / "profile-cuda-mlp-2048-train.json"
    profile = load_training_profile(path)
    assert json.loads(path.read_text())["environment"]["device"] == "cuda"
    assert profile is not None


@pytest.mark.parametrize("model", MODELS)
def test_replaying_the_run_s_own_server_speed_meets_the_tolerance(suites, model):
    """The batching and queueing model on a GPU: each run's server speed replayed moment by moment (the
    simulator still forms every batch and queue); p50 ±10%, p99 ±20%, batch size ±10%, throughput ±2% on
    every run at <= 85% measured load."""
    runs = suites[model]["from-run-replay"]["runs"]
    print({r["run"]: (round(r["load"], 2), {k: round(r["error"][k], 3) for k in REPLAY_BOUNDS}) for r in runs})
    judged_runs = [r for r in runs if r["load"] <= MAX_LOAD]
    assert len(judged_runs) >= 6, [r["run"] for r in runs]
    misses = [(r["run"], key, round(r["error"][key], 3)) for r in judged_runs for key in outside(r, REPLAY_BOUNDS)]
    assert not misses, misses


@pytest.mark.parametrize("model", MODELS)
def test_replay_with_a_wrong_batching_rule_misses(suites, model, tmp_path):
    outcomes = wrong_rule_replays(suites[model]["run_dirs"], suites[model]["from-run-replay"]["runs"], tmp_path,
                                  WRONG_RULES)
    print(outcomes)
    assert outcomes, "no run where a wrong rule binds"
    assert all(missed for *_, missed in outcomes), outcomes


@pytest.mark.parametrize("way", list(FLOORS))
@pytest.mark.parametrize("model", MODELS)
def test_predictions_from_measurements_apart_from_the_run(suites, model, way):
    """The back-to-back calibration and a request log of one run (B 8, 60%) predicting the other runs:
    printed per run, and at least as many runs within the tolerance as published."""
    runs = suites[model]["calibrated" if way == "calibrated" else "from-log"]["runs"]
    rows = [(r["run"], round(r["load"], 2), round(r["error"]["latency_p50_s"], 3),
             round(r["error"]["latency_p99_s"], 3), round(r["service_ratio"], 2)) for r in runs]
    counts = (within(runs, "latency_p50_s"), within(runs, "latency_p99_s"))
    print(f"\n{model} {way}: (run, load, p50 error, p99 error, served/profile time) {rows}; "
          f"within p50/p99 {counts} of {len(judged(runs))}")
    p50_floor, p99_floor = FLOORS[way][model]
    assert counts[0] >= p50_floor and counts[1] >= p99_floor, (counts, FLOORS[way][model], rows)


def test_the_gpu_server_across_two_leases():
    """The same model, settings and seed on two leases 14 minutes apart: the back-to-back calibration
    agrees within a few percent, the served latency does not (printed; it is the spread any prediction
    of a GPU server from a calibration has to live with)."""
    import numpy as np
    import pandas as pd

    first, second = RECORDING / "bert-encoder-fp16", RECORDING / "bert-encoder-fp16-lease2"
    name = "profile-cuda-bert-encoder-fp16.json"
    b1 = [float(np.median(json.loads((f / name).read_text())["batches"][0]["latency_s"])) for f in (first, second)]
    assert abs(b1[1] / b1[0] - 1) <= 0.05, b1
    for run in sorted(p.name for p in second.glob("b*")):
        lat = [pd.read_parquet(f / run / "requests.parquet")["latency_s"] for f in (first, second)]
        print(run, "p50 ms", [round(x.median() * 1e3, 2) for x in lat],
              "p99 ms", [round(x.quantile(0.99) * 1e3, 2) for x in lat])


# The judged runs' split-half agreement (docs/validation.md, GPU): how well each run's first half predicts
# its second half, per model (p50 within 10%, p99 within 20%, judged) — the real server's own repeatability.
REAL_HALVES = {"bert-encoder-fp16": (3, 3, 8), "resnet50-fp16": (5, 5, 7)}


@pytest.mark.parametrize("model", MODELS)
def test_the_published_split_half_agreement(suites, model):
    from sim.validation.h100 import split_half
    from sim.validation.validate import load_run

    agree = [0, 0, 0]
    for r in judged(suites[model]["from-run-replay"]["runs"]):
        run = load_run(RECORDING / model / r["run"])
        error = split_half(run.requests, run.batches)
        agree = [agree[0] + (abs(error["latency_p50_s"]) <= TOLERANCES["latency_p50_s"]),
                 agree[1] + (abs(error["latency_p99_s"]) <= TOLERANCES["latency_p99_s"]), agree[2] + 1]
    assert tuple(agree) == REAL_HALVES[model]
