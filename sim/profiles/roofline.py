"""Roofline estimates of service time for hardware we could not measure.

From a built-in model's analytic cost (``sim.models.costs``) and a catalog GPU
(``sim.hardware.gpus``), an estimate for batch size ``b`` is

    max(flops(b) / (peak_flops * compute_efficiency), bytes(b) / (bandwidth * memory_efficiency))
    + kernels * per_kernel_overhead_s                                   (launch)
    + io_bytes(b) / (host_link * link_efficiency) + 2 * transfer_latency_s (copies)

with the efficiencies and overheads stated in :class:`Assumptions` (assumed, not measured).
:func:`estimate_profile` turns these numbers into a ``capsim.profile/1`` document of kind
``"estimate"``. No torch here: the simulator and the planner use this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.errors import ProfileError, bad_value
from sim.hardware.gpus import DTYPE_BYTES, Gpu, get_gpu
from sim.models.archs import builtin_arch
from sim.models.costs import ModelCost, model_cost
from sim.profiles.profile import BUILTIN_DIR, as_profile


@dataclass(frozen=True)
class Assumptions:
    """What a roofline estimate assumes beyond the datasheet. Not measured: stated so it can be argued."""

    compute_efficiency: float = 0.5  # share of dense peak eager kernels reach
    memory_efficiency: float = 0.8  # share of datasheet bandwidth reached by streaming kernels
    link_efficiency: float = 0.8  # share of the PCIe link reached by pageable copies
    per_kernel_overhead_s: float = 8e-6  # eager PyTorch dispatch + launch per op
    transfer_latency_s: float = 10e-6  # fixed cost of each host<->device copy


@dataclass(frozen=True)
class LatencyEstimate:
    """One batch's roofline estimate, its parts kept apart (seconds)."""

    batch_size: int
    flops: float
    bytes: float
    compute_s: float
    memory_s: float
    launch_s: float  # eager kernel launches
    copy_s: float  # input to the device and output back

    @property
    def forward_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.launch_s

    @property
    def total_s(self) -> float:
        return self.forward_s + self.copy_s

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"


def estimate_latency(cost: ModelCost, gpu: Gpu, dtype: str, batch_size: int,
                     assumptions: Assumptions = Assumptions()) -> LatencyEstimate:
    """Roofline latency of one batch, end to end as ``latency_s`` of a profile means it."""
    width = DTYPE_BYTES[dtype]
    flops = cost.flops * batch_size
    moved = (cost.parameters + cost.buffers) * width + cost.activation_elems * width * batch_size
    input_bytes = cost.input_bytes * (width / 4 if cost.float_input else 1)
    io_bytes = (input_bytes + cost.output_elems * width) * batch_size
    link = gpu.host_link_bytes_per_s * assumptions.link_efficiency
    return LatencyEstimate(
        batch_size=batch_size, flops=flops, bytes=moved,
        compute_s=flops / (gpu.peak_flops(dtype) * assumptions.compute_efficiency),
        memory_s=moved / (gpu.memory_bandwidth_bytes_per_s * assumptions.memory_efficiency),
        launch_s=cost.kernels * assumptions.per_kernel_overhead_s,
        copy_s=io_bytes / link + 2 * assumptions.transfer_latency_s,
    )


def max_batch_size_fits(cost: ModelCost, gpu: Gpu, dtype: str, headroom: float = 0.9) -> int:
    """Largest batch whose weights plus peak activations fit in ``headroom`` of device memory."""
    width = DTYPE_BYTES[dtype]
    free = headroom * gpu.memory_bytes - (cost.parameters + cost.buffers) * width
    return max(0, int(free // (cost.peak_activation_elems * width)))


# --- estimated profiles -------------------------------------------------------------------------

def estimate_profile(model_name: str, gpu: str, dtype: str, batch_sizes: list[int] | tuple[int, ...],
                     source_profile=None, *, shape_profile=None, samples: int = 100,
                     seq_len: int | None = None, assumptions: Assumptions = Assumptions()) -> dict:
    """A ``capsim.profile/1`` document of kind ``"estimate"`` for a built-in model on a catalog GPU.

    With ``source_profile`` (a measured profile of the same model on another catalog GPU, as a
    ``sim.profiles.profile.Profile``, path or shipped name) every sample is scaled by the roofline ratio
    target/source of its batch size. Without it, each size's samples are the roofline latency times
    the *shape* of a measured distribution: ``shape_profile``'s samples at the nearest measured size
    divided by their median (or, with no shape profile, ``samples`` copies of the point estimate).
    """
    sizes = _check_sizes(batch_sizes)
    if dtype not in DTYPE_BYTES:
        raise ProfileError(bad_value("dtype", dtype, f"one of {', '.join(DTYPE_BYTES)}"))
    cost, target = model_cost(model_name, seq_len), get_gpu(gpu)
    est = {b: estimate_latency(cost, target, dtype, b, assumptions) for b in sizes}
    source = as_profile(source_profile) if source_profile is not None else None
    shape = as_profile(shape_profile) if shape_profile is not None else None
    if source is not None:
        batches, scales, notes = _scaled_batches(source, model_name, cost, est, assumptions)
        host = source.host_overhead_s
    else:
        batches, scales, notes = _roofline_batches(shape, est, samples)
        host = shape.host_overhead_s if shape is not None else ()
    weight_bytes = (cost.parameters + cost.buffers) * DTYPE_BYTES[dtype]
    to_device_s = weight_bytes / (target.host_link_bytes_per_s * assumptions.link_efficiency)
    return {
        "schema": "capsim.profile/1",
        "kind": "estimate",
        "created_utc": _utc_now(),
        "environment": {"device": "cuda", "device_name": target.name, "cpu": None, "cpu_threads": None,
                        "torch": None, "cuda": None, "driver": None, "python": None, "platform": None},
        "model": {"name": model_name, "dtype": dtype, "compiled": False, "parameters": cost.parameters,
                  "weight_bytes": weight_bytes, "seq_len": getattr(builtin_arch(model_name, seq_len),
                                                                   "seq_len", None)},
        "batches": batches,
        "host_overhead_s": [_round4(x) for x in host],
        "serving_replay": None,
        "memory": {"device_total_bytes": target.memory_bytes,
                   "max_batch_size_fits": max_batch_size_fits(cost, target, dtype),
                   "method": "analytic: 90% of device memory minus weights, over peak activations per request"},
        "load": {"weight_bytes": weight_bytes, "checkpoint_read_cold_s": None, "checkpoint_read_warm_s": None,
                 "host_to_device_s": _round4(to_device_s), "runtime_start_s": None, "warmup_s": None,
                 "load_rate_bytes_per_s": None,
                 "notes": ["estimate: only host_to_device_s is derived (weights over the PCIe link); "
                           "checkpoint read, runtime start and warm-up were not measured on this GPU"]},
        "estimate": {
            "method": "roofline-scaled" if source is not None else "roofline",
            "gpu": target.key,
            "source_profile": _reference(source) if source is not None else None,
            "shape_profile": _reference(shape) if shape is not None and source is None else None,
            "scale": _round4(sorted(scales.values())[len(scales) // 2]) if scales else None,
            "scale_by_batch_size": {str(b): _round4(s) for b, s in scales.items()},
            "assumptions": dict(assumptions.__dict__),
            "roofline": {str(b): _breakdown(e) for b, e in est.items()},
            "gpu_sources": dict(target.sources),
            "notes": notes,
        },
    }


def _check_sizes(batch_sizes) -> tuple[int, ...]:
    sizes = tuple(sorted(set(batch_sizes)))
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ProfileError(bad_value("batch_sizes", list(batch_sizes), "one or more integers >= 1"))
    return sizes


def _roofline_batches(shape, est: dict[int, LatencyEstimate], samples: int):
    batches, scales = [], {}
    for b, e in est.items():
        if shape is None:
            unit = [1.0] * samples
        else:
            near = min(shape.batch_sizes, key=lambda s, b=b: abs(math.log(s / b)))
            measured = shape.latency_s[near]
            unit = list(measured / float(sorted(measured)[len(measured) // 2]))
        entry = {"batch_size": b, "latency_s": [_round4(e.total_s * u) for u in unit],
                 "forward_s": [_round4(e.forward_s * u) for u in unit], "first_call_s": None,
                 "peak_memory_bytes": None}
        if shape is not None and shape.host_overhead_by_batch_s:
            entry["host_overhead_s"] = [_round4(x) for x in shape.host_overhead_for(near)]
        batches.append(entry)
    notes = ("roofline estimate, not a measurement; first-call stalls unknown (first_call_s null): "
             "declare the service warmed up or measure on the GPU")
    if shape is not None:
        notes += (f"; distribution shape and host overhead (of the nearest measured size) borrowed from "
                  f"{shape.path.name} ({shape.device})")
    return batches, scales, notes


def _scaled_batches(source, model_name: str, cost: ModelCost, est: dict[int, LatencyEstimate],
                    assumptions: Assumptions):
    if source.model_name != model_name:
        raise ProfileError(bad_value("source_profile", str(source.path),
                                     f"a profile of {model_name!r}, not of {source.model_name!r}"))
    if source.device != "cuda":
        raise ProfileError(bad_value("source_profile", str(source.path),
                                     "a profile measured on a catalog GPU (scaling needs both rooflines); "
                                     "pass it as shape_profile to borrow only its distribution's shape"))
    source_gpu = get_gpu(source.device_name)
    batches, scales = [], {}
    for b, e in est.items():
        if b not in source.latency_s:
            raise ProfileError(bad_value("batch_sizes", b, f"sizes measured in {source.path.name}: "
                                         f"{', '.join(map(str, source.batch_sizes))}"))
        ratio = e.total_s / estimate_latency(cost, source_gpu, source.dtype, b, assumptions).total_s
        scales[b] = ratio
        first = source.first_call_s.get(b)
        excess = None if first is None else first - source.median_latency_s(b)
        batches.append({
            "batch_size": b, "latency_s": [_round4(x * ratio) for x in source.latency_s[b]],
            "forward_s": [_round4(x * ratio) for x in source.forward_s.get(b, ())],
            "first_call_s": None if excess is None else _round4(source.median_latency_s(b) * ratio + excess),
            "peak_memory_bytes": None,
            "host_overhead_s": [_round4(x) for x in source.host_overhead_for(b)],
        })
    notes = (f"measured on {source_gpu.key} ({source.path.name}), scaled per batch size by the roofline "
             "ratio target/source; first-call excess over the median carried over unchanged")
    return batches, scales, notes


def _reference(profile) -> str:
    """A shipped profile by its name (portable), any other by its path."""
    return profile.path.stem if profile.path.parent.resolve() == BUILTIN_DIR.resolve() else str(profile.path)


def _breakdown(e: LatencyEstimate) -> dict:
    return {"flops": _round4(e.flops), "bytes": _round4(e.bytes), "compute_s": _round4(e.compute_s),
            "memory_s": _round4(e.memory_s), "launch_s": _round4(e.launch_s), "copy_s": _round4(e.copy_s),
            "total_s": _round4(e.total_s), "bound": e.bound}


def _round4(x: float) -> float:
    return float(f"{x:.4g}")


def _utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
