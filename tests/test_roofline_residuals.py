"""The roofline against real GPU measurements: every size of every shipped measured GPU profile within
the stated bound, the bound recorded in every shipped estimate, the table in docs/gpu.md current; and
the cold start decomposed from measured load figures adds up."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sim.hardware.gpus import get_gpu
from sim.models.costs import model_cost
from sim.profiles.profile import as_profile, builtin_profile_path, list_builtin_profiles
from sim.profiles.roofline import ROOFLINE_BOUND, estimate_latency, residual_table, uncertainty
from sim.scaling.lifecycle import PhaseSampler, cold_start_phases
from sim.scenario.load import load_scenario
from sim.scenario.scaling import ColdStart

ROOT = Path(__file__).resolve().parents[1]
MEASURED = {"h100-resnet50-fp16", "h100-bert-encoder-fp16", "h100-mlp-2048-fp32"}
SEVEN_B_BYTES = 15_032_390_096  # the 14 GB checkpoint of the H100 cold-start measurement


def test_every_measured_size_is_within_the_stated_bound():
    rows = residual_table()
    assert {r["profile"] for r in rows if not r["held_out"]} == MEASURED and len(rows) >= 27
    for r in rows:
        profile = as_profile(r["profile"])
        assert r["measured_s"] == np.median(profile.latency_s[r["batch_size"]])
        if not r["held_out"]:
            assert abs(r["residual"]) <= ROOFLINE_BOUND, r


def test_held_out_gpu_profiles_miss_by_the_host_s_op_issue_time():
    """The H200 profiles (capsim calibrate on another host) are held out. Every size there is launch bound
    and over-estimated: the host issued eager ops 1.4-1.8x faster than the H100's. With the op-issue time
    scaled by the ratio of the measured batch-1 times, the residuals of 63 of the 64 sizes fall within
    the bound: the error is the host's, not the device model's."""
    from dataclasses import replace

    from sim.profiles.roofline import Assumptions

    held = [r for r in residual_table() if r["held_out"]]
    assert {r["profile"] for r in held} >= {"h200-bert-encoder-fp16", "h200-resnet50-fp16"}
    for name in {r["profile"] for r in held}:
        rows = [r for r in held if r["profile"] == name]
        profile = as_profile(name)
        cost, gpu = model_cost(profile.model_name), get_gpu(profile.device_name)
        assert all(estimate_latency(cost, gpu, profile.dtype, r["batch_size"]).launch_bound for r in rows)
        assert all(r["residual"] > ROOFLINE_BOUND for r in rows if r["batch_size"] == 1), rows[0]
        batch1 = next(r for r in rows if r["batch_size"] == 1)
        host = replace(Assumptions(), per_kernel_overhead_s=Assumptions().per_kernel_overhead_s
                       * batch1["measured_s"] / batch1["estimate_s"])
        rescaled = [estimate_latency(cost, gpu, profile.dtype, r["batch_size"], host).total_s / r["measured_s"] - 1
                    for r in rows]
        within = [abs(x) <= ROOFLINE_BOUND for x in rescaled]
        # bert-encoder at 14 is the one miss (-44%): its 60 samples were bimodal (min 2.24 ms, median 3.87 ms
        # between neighbours of 2.3-2.4 ms), a slow stretch of the machine while that size was measured.
        assert sum(within) >= 0.95 * len(within), (name, [round(x, 3) for x in rescaled])


def test_eager_resnet50_at_batch_1_is_launch_bound():
    estimate = estimate_latency(model_cost("resnet50"), get_gpu("H100-SXM"), "fp16", 1)
    assert estimate.launch_bound and estimate.bound == "memory"
    assert estimate.total_s == pytest.approx(as_profile("h100-resnet50-fp16").median_latency_s(1), rel=0.05)


@pytest.mark.parametrize("name", [n for n in list_builtin_profiles() if as_profile(n).is_estimate])
def test_every_shipped_estimate_states_the_current_uncertainty(name):
    stated = json.loads(builtin_profile_path(name).read_text())["estimate"]["uncertainty"]
    now = uncertainty()
    assert stated["bound"] == ROOFLINE_BOUND and stated["residuals"].keys() == now["residuals"].keys()
    assert stated["held_out_residuals"].keys() == now["held_out_residuals"].keys()
    for key in ("residuals", "held_out_residuals"):
        for profile, residuals in now[key].items():
            assert stated[key][profile] == pytest.approx(residuals, abs=1e-3), "run scripts/estimate_profiles.sh"


def test_the_table_in_docs_is_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("roofline_residuals", ROOT / "scripts" / "roofline_residuals.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    docs = (ROOT / "docs" / "gpu.md").read_text()
    missing = [row for row in module.table_rows() if row not in docs]
    assert not missing, f"run scripts/roofline_residuals.py and update docs/gpu.md: {missing[:2]}"


def test_a_measured_profile_decomposes_its_cold_start_as_the_simulator_draws_it():
    profile = as_profile("h100-resnet50-fp16")
    load = profile.load
    rows = dict((name, seconds) for name, seconds, _ in cold_start_phases(ColdStart(), profile))
    assert rows["runtime start"] == pytest.approx(3.947 + 0.1745, abs=1e-3)  # import torch + CUDA context
    assert rows["weight load"] == pytest.approx(profile.weight_bytes / load["load_rate_bytes_per_s"])
    assert rows["warm-up"] == load["warmup_s"]
    drawn = PhaseSampler(ColdStart(), profile, True, np.random.default_rng(0)).phases()
    assert drawn["load"] == pytest.approx(rows["runtime start"] + rows["weight load"])
    assert drawn["warmup"] == rows["warm-up"] and drawn["provision"] == rows["provisioning"]
    up = rows["runtime start"] + rows["weight load"] + rows["warm-up"]
    assert rows["readiness probe"] == pytest.approx(math.ceil(up / 10) * 10 - up)
    assert sum(rows.values()) == pytest.approx(2 + 10)  # ready at the first probe tick after 5.1 s of work


def test_the_7b_example_derives_its_weight_load_from_the_measured_rate():
    load = as_profile("h100-resnet50-fp16").load
    weights_s = SEVEN_B_BYTES / load["load_rate_bytes_per_s"]
    assert weights_s == pytest.approx(9.83, abs=0.01)  # 14 GB read cold to the GPU, as measured
    scenario = load_scenario(ROOT / "examples" / "autoscaling" / "llm_7b_cold_start.yaml")
    spec = scenario.cold_start
    assert spec.weight_load_s == pytest.approx(load["runtime_start_s"] + weights_s, abs=0.01)
    rows = {name: seconds for name, seconds, _ in cold_start_phases(spec)}
    assert rows == pytest.approx({"provisioning": 2, "image pull": 30, "runtime start + weight load": 13.96,
                                  "warm-up": 1, "readiness probe": 5.04})
    assert sum(rows.values()) == pytest.approx(52.0)  # within the "30-60 s to load" of a 7B model
