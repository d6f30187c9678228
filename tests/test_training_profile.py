"""The training section of ``capsim.profile/3``: the reader and the JSON Schema refuse the same hostile cases,
the serving reader says a training profile is one, measured all-reduce times are read back as measured,
and a plan on the profiled device uses the measured steps."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from sim.errors import ProfileError
from sim.profiles.profile import profile_from_dict
from sim.profiles.training import training_profile_from_dict, write_training_profile
from sim.theory.collectives import ring_allreduce_s
from sim.training.job import estimate_plan
from sim.training.scenario import training_plan_from_dict
from sim.training.setup import build_setup

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = jsonschema.Draft202012Validator(json.loads((ROOT / "sim/data/profile.schema.json").read_text()))
ALPHA, BETA = 50e-6, 1.2e9  # the all-reduce of the document below follows the ring model exactly


def doc() -> dict:
    sizes = [4096, 65536, 1048576, 16777216]
    return {
        "schema": "capsim.profile/3", "kind": "measured", "created_utc": "2026-01-01T00:00:00Z",
        "environment": {"device": "cpu", "device_name": "test cpu", "cpu_threads": 1},
        "model": {"name": "mlp", "dtype": "fp32", "parameters": 1838081},
        "memory": {"device_total_bytes": 16 * 2**30, "method": "test", "fit_method": "none"},
        "training": {
            "precision": "fp32", "optimizer": "adam", "gradient_bytes": 7352324, "method": "test",
            "steps": [{"micro_batch": 16, "forward_backward_s": [0.004, 0.0041, 0.0042], "optimizer_s": [0.006] * 3},
                      {"micro_batch": 64, "forward_backward_s": [0.009, 0.01, 0.011], "optimizer_s": [0.006] * 3}],
            "allreduce": {"backend": "gloo", "device": "cpu", "world_size": 2,
                          "sizes": [{"message_bytes": s, "time_s": [ring_allreduce_s(s, 2, BETA, ALPHA)] * 3}
                                    for s in sizes]}}}


def changed(key: str, value) -> dict:
    d = copy.deepcopy(doc())
    *parents, last = key.split(".")
    section = d
    for name in parents:
        section = section[int(name)] if name.isdigit() else section[name]
    section[int(last) if last.isdigit() else last] = value
    return d


def test_a_training_profile_is_valid_for_reader_and_schema():
    SCHEMA.validate(doc())
    p = training_profile_from_dict(doc())
    assert p.micro_batches == (16, 64) and p.compute_s(16) == pytest.approx(0.0041)
    assert p.compute_s(40) == pytest.approx((0.0041 + 0.01) / 2)
    assert p.allreduce.latency_s == pytest.approx(ALPHA) and p.allreduce.bus_bandwidth_bytes_per_s == pytest.approx(BETA)


@pytest.mark.parametrize("key,value,expected,schema", [
    ("training.steps", [], "training.steps = []: a non-empty list", True),
    ("training.steps.0.micro_batch", 0, "training.steps[0].micro_batch = 0", True),
    ("training.steps.0.forward_backward_s", [-0.1], "training.steps[0].forward_backward_s = -0.1", True),
    ("training.steps.0.forward_backward_s", [math.nan], "training.steps[0].forward_backward_s = nan", False),
    ("training.steps.1.micro_batch", 16, "each micro-batch size may appear once", False),
    ("training.precision", "fp8", "training.precision = 'fp8'", True),
    ("training.allreduce.world_size", 1, "training.allreduce.world_size = 1", True),
    ("training.allreduce.sizes", [{"message_bytes": 4, "time_s": [1e-5]}], "the fit of latency and bandwidth "
                                                                            "needs two sizes", True),
    ("training.allreduce.sizes.0.time_s", [], "training.allreduce.sizes[0].time_s = []", True),
    ("schema", "capsim.profile/2", "a capsim.profile/3 section; the file says schema 'capsim.profile/2'", True),
])
def test_reader_and_schema_refuse_the_same_cases(key, value, expected, schema):
    bad = changed(key, value)
    with pytest.raises(ProfileError) as refused:
        training_profile_from_dict(bad, "p.json")
    print(f"\n{refused.value}")
    assert expected in str(refused.value) and str(refused.value).startswith("p.json: ")
    assert SCHEMA.is_valid(bad) != schema


def test_the_serving_reader_says_a_training_profile_is_one():
    with pytest.raises(ProfileError, match="this is a training profile, which capsim train-plan reads"):
        profile_from_dict(doc(), "t.json")
    assert not SCHEMA.is_valid({k: v for k, v in doc().items() if k != "training"})  # neither batches nor training


def test_measured_allreduce_is_read_back_at_its_sizes_and_rescaled_by_the_ring():
    measured = training_profile_from_dict(doc()).allreduce
    for size in (4096, 1048576):
        assert measured.time_s(size, 2) == pytest.approx(ring_allreduce_s(size, 2, BETA, ALPHA), rel=1e-9)
    # between measured sizes: linear; on 4 ranks: the ring model's latency steps and bytes
    assert measured.time_s(3e5, 2) == pytest.approx(ring_allreduce_s(3e5, 2, BETA, ALPHA), rel=1e-9)
    assert measured.time_s(16777216, 4) == pytest.approx(ring_allreduce_s(16777216, 4, BETA, ALPHA), rel=1e-9)
    assert measured.time_s(1e6, 1) == 0.0


def test_a_plan_on_the_profiled_device_uses_the_measured_steps(tmp_path):
    path = write_training_profile(doc(), tmp_path / "cpu-mlp-train.json")
    plan = training_plan_from_dict({
        "kind": "training", "model": {"name": "mlp"}, "data": {"samples": 1e6}, "precision": "fp32",
        "batch": {"global_batch": 128, "micro_batch": 64}, "reliability": {"gpu_mtbf_hours": None},
        "cluster": {"gpu": "profile", "gpus": 2, "usd_per_gpu_hour": 0.1}, "compute": {"profile": path.name}},
        base_dir=tmp_path)
    job = estimate_plan(build_setup(plan))
    print(f"\nmlp on 2 profiled processes: step {job.step.total_s * 1e3:.2f} ms = compute {job.step.compute_s * 1e3:.2f}"
          f" + exposed sync {job.step.sync_exposed_s * 1e3:.2f} (of {job.step.sync_s * 1e3:.2f}) + optimizer "
          f"{job.step.optimizer_s * 1e3:.2f}")
    assert job.step.compute_source == "measured" and job.step.compute_s == pytest.approx(0.01)
    assert job.step.optimizer_s == pytest.approx(0.006)
    assert job.step.sync_s == pytest.approx(ring_allreduce_s(2**20, 2, BETA, ALPHA)
                                            + ring_allreduce_s(7352324 - 2**20, 2, BETA, ALPHA), rel=1e-6)
    wider = plan.model_copy(update={"batch": plan.batch.model_copy(update={"micro_batch": 128, "global_batch": 256})})
    with pytest.raises(ProfileError, match="micro-batch 128 is outside the measured sizes 16..64"):
        estimate_plan(build_setup(wider))
    assert np.isfinite(job.wall_s)
