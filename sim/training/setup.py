"""From a plan file to what the estimates need: the model, the device, its links, the measured profile.

``cluster.gpu`` names a catalog GPU (memory, dense peak, HBM bandwidth, price, NVLink and node network)
or ``profile``: the device ``compute.profile`` was measured on, with the memory it reported, the
all-reduce it measured and the price the plan gives. A profile's measured step times replace the
roofline estimate only on the device they were measured on, in the precision they were measured in.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ProfileError, ScenarioError, bad_value
from sim.hardware.gpus import Gpu, get_gpu, gpu_catalog
from sim.profiles.training import TrainingProfile, load_training_profile
from sim.training.fabric import Fabric, catalog_fabric, measured_fabric
from sim.training.layout import MIB, Layout
from sim.training.models import (
    TrainedModel,
    TransformerShape,
    shipped_models,
    trained_model,
    transformer_model,
)
from sim.training.scenario import TrainingPlan, resolve_path

PROFILED = "profile"


@dataclass(frozen=True)
class Device:
    key: str
    memory_bytes: int
    peak_flops: float | None  # dense peak in the plan's precision; None where unknown (a profiled CPU)
    memory_bandwidth_bytes_per_s: float | None
    usd_per_hour: float
    fabric: Fabric


@dataclass(frozen=True)
class Setup:
    plan: TrainingPlan
    model: TrainedModel
    device: Device
    profile: TrainingProfile | None = None


def build_setup(plan: TrainingPlan, gpu: str | None = None) -> Setup:
    """Everything the estimates read, for ``gpu`` (default ``cluster.gpu``); one-line errors."""
    profile = _profile(plan)
    model = plan_model(plan, profile)
    key = gpu or plan.cluster.gpu
    if key == PROFILED:
        if profile is None:
            raise ScenarioError(bad_value("cluster.gpu", key, "needs compute.profile (the device it measured)"))
        return Setup(plan, model, _profiled_device(plan, profile), profile)
    catalog_gpu = _catalog_gpu(key)
    if profile is not None and not _same_device(profile, catalog_gpu):
        profile = None if gpu is not None else _mismatch(plan, profile, catalog_gpu)
    return Setup(plan, model, _catalog_device(plan, catalog_gpu), profile)


def plan_model(plan: TrainingPlan, profile: TrainingProfile | None = None) -> TrainedModel:
    """The plan's model: shipped, described in the plan, or (a model only its profile knows, such as
    ``module:factory``) the parameters its profile counted."""
    m, seq = plan.model, plan.data.seq_len
    if m.parameters is None and profile is not None and profile.parameters and m.name not in shipped_models():
        model = generic_model_like(m.name, profile.parameters, m.layers or 1, 2.0 * profile.parameters)
    elif m.parameters is None:
        model = trained_model(m.name, seq)
    elif m.hidden is not None:
        shape = TransformerShape(m.layers or 1, m.hidden, m.heads, (m.kv_heads or m.heads) * m.hidden // m.heads,
                                 m.ffn, m.vocab, seq or 2048, m.gated_mlp, lm_head=True)
        model = transformer_model(m.name, shape, int(m.parameters), 2 * m.vocab * m.hidden)
    else:
        flops = m.forward_flops_per_sample or 2 * m.parameters
        model = generic_model_like(m.name, int(m.parameters), m.layers or 1, flops)
    if plan.data.tokens is not None and model.transformer is None:
        raise ScenarioError(bad_value("data.tokens", plan.data.tokens, f"{model.name} has no tokens; give data.samples"))
    return model


def generic_model_like(name: str, parameters: int, layers: int, forward_flops: float) -> TrainedModel:
    """Your own non-transformer model: activations unknown, counted as none (say so where it matters)."""
    return TrainedModel(name, parameters, layers, 0, forward_flops)


def base_layout(plan: TrainingPlan, gpus: int | None = None) -> Layout:
    p = plan.parallel
    return Layout(gpus=gpus or plan.cluster.gpus, tensor=p.tensor, pipeline=p.pipeline, zero=p.zero,
                  micro_batch=plan.batch.micro_batch, global_batch=plan.batch.global_batch,
                  activation_checkpointing=p.activation_checkpointing, sequence_parallel=p.sequence_parallel,
                  flash_attention=p.flash_attention, bucket_bytes=p.bucket_mb * MIB)


def catalog_keys() -> list[str]:
    return list(gpu_catalog())


def _catalog_gpu(key: str) -> Gpu:
    try:
        return get_gpu(key)
    except ProfileError:
        raise ScenarioError(bad_value("cluster.gpu", key, f"a catalog GPU ({', '.join(gpu_catalog())}) or "
                                      f"{PROFILED!r} (the device of compute.profile)")) from None


def _catalog_device(plan: TrainingPlan, gpu: Gpu) -> Device:
    net = plan.network
    per_node = plan.cluster.gpus_per_node or gpu.gpus_per_node or 1
    fabric = catalog_fabric(gpu, per_node, net.efficiency, net.intra_node_latency_s, net.inter_node_latency_s)
    dtype = "fp32" if plan.precision == "fp32" else plan.precision.removesuffix("-mixed")
    peak = gpu.peak_tflops.get(dtype)
    if not peak:
        raise ScenarioError(bad_value("precision", plan.precision, f"{gpu.key} has no {dtype} peak; use "
                                      + " or ".join(f"{k}-mixed" if k != "fp32" else k
                                                    for k, v in gpu.peak_tflops.items() if v)))
    price = plan.cluster.usd_per_gpu_hour if plan.cluster.usd_per_gpu_hour is not None else gpu.usd_per_hour
    return Device(gpu.key, gpu.memory_bytes, peak * 1e12, gpu.memory_bandwidth_bytes_per_s, price, fabric)


def _profiled_device(plan: TrainingPlan, profile: TrainingProfile) -> Device:
    if profile.allreduce is None:
        raise ScenarioError(bad_value("compute.profile", str(profile.path), "has no training.allreduce; "
                                      "calibrate with --world-size 2 or more"))
    per_node = plan.cluster.gpus_per_node or profile.allreduce.world_size
    if profile.device_memory_bytes is None:
        raise ScenarioError(bad_value("compute.profile", str(profile.path), "has no memory.device_total_bytes"))
    return Device(profile.device_name or profile.device, profile.device_memory_bytes, None, None,
                  plan.cluster.usd_per_gpu_hour or 0.0, measured_fabric(profile.allreduce, per_node))


def _profile(plan: TrainingPlan) -> TrainingProfile | None:
    if plan.compute.profile is None:
        return None
    profile = load_training_profile(resolve_path(plan, plan.compute.profile))
    if profile.model_name != plan.model.name:
        raise ScenarioError(bad_value("compute.profile", plan.compute.profile, f"measured {profile.model_name!r}; "
                                      f"the plan trains {plan.model.name!r}"))
    if profile.precision != plan.precision:
        raise ScenarioError(bad_value("precision", plan.precision, f"compute.profile was measured in "
                                      f"{profile.precision}; give precision: {profile.precision}"))
    return profile


def _same_device(profile: TrainingProfile, gpu: Gpu) -> bool:
    if profile.device != "cuda" or not profile.device_name:
        return False
    try:
        return get_gpu(profile.device_name).key == gpu.key
    except ProfileError:
        return False


def _mismatch(plan: TrainingPlan, profile: TrainingProfile, gpu: Gpu):
    raise ScenarioError(bad_value("cluster.gpu", plan.cluster.gpu, f"compute.profile was measured on "
                                  f"{profile.device_name or profile.device}; use cluster.gpu: {PROFILED}, or "
                                  "drop compute.profile for the roofline estimate"))
