"""Roofline estimates: the catalog cites its sources, the counts match the architectures, the
estimates behave like rooflines and come out as valid, clearly labelled profiles."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from sim.errors import ProfileError
from sim.hardware.gpus import get_gpu, gpu_catalog
from sim.models.costs import model_cost
from sim.profiles.profile import load_profile, profile_from_dict
from sim.profiles.roofline import Assumptions, estimate_latency, estimate_profile, max_batch_size_fits

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "sim/data/profile.schema.json").read_text())
REQUIRED_GPUS = {"H100-SXM", "H200", "A100-40GB", "A100-80GB", "L40S", "L4", "A10G", "T4"}
FIGURES = ("peak_tflops", "memory_bytes", "memory_bandwidth_bytes_per_s", "host_link", "usd_per_hour")


def test_catalog_has_every_gpu_and_a_source_url_for_every_figure():
    catalog = gpu_catalog()
    assert set(catalog) >= REQUIRED_GPUS
    for key, gpu in catalog.items():
        for figure in FIGURES:
            assert gpu.sources.get(figure, "").startswith("https://"), (key, figure)
        assert gpu.peak_flops("fp16") > gpu.peak_flops("fp32") > 0
        assert gpu.usd_per_hour > 0 and gpu.memory_bytes >= 16 * 1024**3


def test_catalog_figures_are_the_datasheet_dense_numbers():
    h100, a100 = get_gpu("H100-SXM"), get_gpu("A100-80GB")
    assert h100.peak_tflops["fp16"] == 989.4 and h100.memory_bandwidth_bytes_per_s == 3.35e12
    assert a100.peak_tflops["bf16"] == 312.0 and a100.memory_bandwidth_bytes_per_s == 2.039e12
    assert get_gpu("H200").memory_bandwidth_bytes_per_s == 4.8e12


def test_gpus_are_found_by_torch_device_names_longest_match_first():
    assert get_gpu("NVIDIA H100 80GB HBM3").key == "H100-SXM"
    assert get_gpu("NVIDIA L40S").key == "L40S"
    assert get_gpu("NVIDIA L4").key == "L4"
    assert get_gpu("Tesla T4").key == "T4"
    with pytest.raises(ProfileError, match="gpu = 'Voodoo 2': the catalog has"):
        get_gpu("Voodoo 2")


def test_known_model_sizes():
    assert model_cost("resnet50").parameters == 25_557_032  # the published ResNet-50 count
    assert model_cost("resnet50").flops == pytest.approx(2 * 4.089e9, rel=1e-3)  # 4.09 GMACs at 224
    assert model_cost("bert-base").parameters == pytest.approx(109.5e6, rel=0.01)
    assert model_cost("bert-base", seq_len=256).flops > 2 * model_cost("bert-base").flops


@pytest.mark.parametrize("name", ["mlp", "resnet50", "bert-base", "decoder"])
def test_latency_grows_with_batch_and_a_faster_gpu_is_faster(name):
    cost = model_cost(name)
    h100 = [estimate_latency(cost, get_gpu("H100-SXM"), "fp16", b).total_s for b in (1, 8, 64)]
    t4 = [estimate_latency(cost, get_gpu("T4"), "fp16", b).total_s for b in (1, 8, 64)]
    assert h100 == sorted(h100) and t4 == sorted(t4)
    assert all(h < t for h, t in zip(h100, t4, strict=True))


def test_the_roofline_takes_the_larger_of_compute_and_memory_plus_overheads():
    cost, gpu = model_cost("mlp"), get_gpu("H100-SXM")
    small = estimate_latency(cost, gpu, "fp16", 1)
    assert small.bound == "memory"  # a batch of 1 reads every weight for 2 flops each
    assert estimate_latency(model_cost("bert-base"), gpu, "fp16", 64).bound == "compute"
    exact = Assumptions(compute_efficiency=1, memory_efficiency=1, link_efficiency=1, per_kernel_overhead_s=0,
                        transfer_latency_s=0)
    e = estimate_latency(cost, gpu, "fp16", 64, exact)
    assert e.compute_s == pytest.approx(cost.flops * 64 / 989.4e12)
    assert e.total_s == pytest.approx(max(e.compute_s, e.memory_s) + e.copy_s)


def test_max_batch_fits_is_bounded_by_device_memory():
    cost = model_cost("bert-base")
    assert max_batch_size_fits(cost, get_gpu("H100-SXM"), "fp16") > max_batch_size_fits(cost, get_gpu("T4"), "fp16")


def test_estimate_profile_is_a_valid_labelled_estimate():
    doc = estimate_profile("resnet50", "H100-SXM", "fp16", [1, 2, 4, 8], samples=10)
    jsonschema.validate(doc, SCHEMA)
    p = profile_from_dict(doc)
    assert p.kind == "estimate" and p.device == "cuda" and p.batch_sizes == (1, 2, 4, 8)
    assert doc["estimate"]["method"] == "roofline" and doc["estimate"]["gpu"] == "H100-SXM"
    assert all(len(set(v)) == 1 for v in p.latency_s.values())  # no shape profile: the point estimate
    assert p.first_call_s == {}
    assert doc["estimate"]["roofline"]["8"]["total_s"] == pytest.approx(p.median_latency_s(8), rel=1e-3)


def test_estimate_borrows_the_shape_of_a_measured_distribution():
    shape = load_profile_builtin("cpu-mlp-fp32")
    doc = estimate_profile("mlp", "L4", "fp16", [1, 3, 8], shape_profile=shape)
    p = profile_from_dict(doc)
    for b, near in ((1, 1), (3, 4), (8, 8)):
        measured = shape.latency_s[near]
        expected = doc["estimate"]["roofline"][str(b)]["total_s"] * measured / measured[len(measured) // 2]
        assert p.latency_s[b] == pytest.approx(sorted(expected), rel=2e-3)
    assert p.host_overhead_s.size == shape.host_overhead_s.size


def test_scaling_a_measured_gpu_profile_by_the_roofline_ratio():
    a100 = copy.deepcopy(estimate_profile("mlp", "A100-80GB", "fp16", [1, 8], samples=5))
    a100["kind"], a100["estimate"] = "measured", None
    a100["environment"]["device_name"] = "NVIDIA A100-SXM4-80GB"
    a100["batches"][0]["first_call_s"] = 0.05
    source = profile_from_dict(a100, "a100-measured.json")
    doc = estimate_profile("mlp", "H100-SXM", "fp16", [1, 8], source_profile=source)
    cost = model_cost("mlp")
    for b in (1, 8):
        ratio = (estimate_latency(cost, get_gpu("H100-SXM"), "fp16", b).total_s
                 / estimate_latency(cost, get_gpu("A100-80GB"), "fp16", b).total_s)
        assert doc["estimate"]["scale_by_batch_size"][str(b)] == pytest.approx(ratio, rel=1e-3)
    p = profile_from_dict(doc)
    excess = 0.05 - source.median_latency_s(1)
    assert p.first_call_s[1] == pytest.approx(p.median_latency_s(1) + excess, rel=1e-3)
    with pytest.raises(ProfileError, match="batch_sizes = 4: sizes measured in a100-measured.json: 1, 8"):
        estimate_profile("mlp", "H100-SXM", "fp16", [4], source_profile=source)


def test_scaling_refuses_a_cpu_source_or_another_model():
    cpu = load_profile_builtin("cpu-mlp-fp32")
    with pytest.raises(ProfileError, match="a profile measured on a catalog GPU"):
        estimate_profile("mlp", "H100-SXM", "fp16", [1], source_profile=cpu)
    with pytest.raises(ProfileError, match="a profile of 'resnet50', not of 'mlp'"):
        estimate_profile("resnet50", "H100-SXM", "fp16", [1], source_profile=cpu)


def test_bad_requests_are_one_line_errors():
    with pytest.raises(ProfileError, match="model = 'gpt9'"):
        estimate_profile("gpt9", "H100-SXM", "fp16", [1])
    with pytest.raises(ProfileError, match=r"batch_sizes = \[0\]"):
        estimate_profile("mlp", "H100-SXM", "fp16", [0])
    with pytest.raises(ProfileError, match="dtype = 'fp8'"):
        estimate_profile("mlp", "H100-SXM", "fp8", [1])
    with pytest.raises(ProfileError, match="seq_len = 4096"):
        model_cost("bert-base", seq_len=4096)


def load_profile_builtin(name: str):
    from sim.profiles.profile import builtin_profile_path

    return load_profile(builtin_profile_path(name))
