"""Roofline estimates of service time for hardware we could not measure.

From a built-in model's analytic cost, op by op (``sim.models.costs``), and a catalog GPU
(``sim.hardware.gpus``), an estimate for batch size ``b`` is

    host:    b * per_request_host_s + input(b) / host_copy_bytes_per_s          (stack the requests)
             + input(b) / page_fault_bytes_per_s   when input(b) > fresh_pages_above_bytes
             + input(b) / min(pageable_copy_bytes_per_s, PCIe * link_efficiency)   (copy to the device)
             + output(b) / (PCIe * link_efficiency) + 2 * transfer_latency_s       (copy back, synchronise)
    forward: every op is issued by the host per_kernel_overhead_s after the previous one and runs on the
             device for max(flops_op(b) / (peak * compute_efficiency), bytes_op(b) / (bandwidth *
             memory_efficiency)) once issued and once the op before it is done (one stream)

with the figures stated in :class:`Assumptions`, one set shared by every model and GPU. Eager PyTorch
is launch bound at small batches (the host issues ops slower than the device runs them) and each op
is its own roofline at large ones. :func:`residual_table` compares the estimates with the shipped
measured GPU profiles; :data:`ROOFLINE_BOUND` is the stated uncertainty every estimate records.
:func:`estimate_profile` turns these numbers into a ``capsim.profile/1`` document of kind
``"estimate"``. No torch here: the simulator and the planner use this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from sim.errors import ProfileError, bad_value
from sim.hardware.gpus import DTYPE_BYTES, Gpu, get_gpu
from sim.models.archs import BUILTIN_ARCHS, builtin_arch
from sim.models.costs import ModelCost, model_cost
from sim.profiles.profile import BUILTIN_DIR, as_profile, list_builtin_profiles

ROOFLINE_BOUND = 0.25  # |estimate / measured median - 1| at every size of every shipped measured GPU profile


@dataclass(frozen=True)
class Assumptions:
    """What a roofline estimate assumes beyond the datasheet, shared by every model and GPU.

    The host figures are of the machine the H100 profiles were measured on (16 vCPUs, eager PyTorch
    2.11); the efficiencies are a GPU's, the same share of every catalog GPU's datasheet figures. They were
    chosen together against every size of the three measured H100 profiles (docs/gpu.md), not per model.
    """

    compute_efficiency: float = 0.7  # share of dense peak a kernel reaches once it has enough work
    memory_efficiency: float = 0.7  # share of datasheet bandwidth a streaming kernel reaches
    link_efficiency: float = 0.8  # share of the PCIe link a copy can reach at best
    per_kernel_overhead_s: float = 32e-6  # host time to issue one eager op (module call, dispatch, launch)
    transfer_latency_s: float = 20e-6  # fixed cost of each host<->device copy, synchronisation included
    per_request_host_s: float = 1.2e-6  # host time per request to take it into the batch (one tensor stacked)
    host_copy_bytes_per_s: float = 20e9  # host memory copy: stacking request tensors into one batch
    pageable_copy_bytes_per_s: float = 8.2e9  # host->device from pageable memory, staged by the driver
    fresh_pages_above_bytes: float = 32 * 2**20  # glibc's largest mmap threshold: a bigger batch buffer is
    #                                              mapped afresh for every batch and its pages faulted in
    page_fault_bytes_per_s: float = 4e9  # first touch of freshly mapped pages (fault and zeroing)


ASSUMPTION_SOURCES = {  # where the figures that are not fitted come from (recorded in every estimate)
    "pageable_copy_bytes_per_s": "measured: a 14 GB fp16 checkpoint from the page cache to an H100 in 1.84 s "
                                 "(tests/data/recordings/h100/coldstart.json)",
    "fresh_pages_above_bytes": "glibc malloc: DEFAULT_MMAP_THRESHOLD_MAX (32 MiB on 64-bit); the measured "
                               "ResNet-50 batch time jumps where its fp16 input passes it (between 64 and 128)",
    "per_kernel_overhead_s": "H100 medians at batch 1 over ops launched: mlp-2048 0.224 ms / 7, "
                             "bert-encoder 4.45 ms / 122, resnet50 5.64 ms / 174 (32-37 us each)",
}


@dataclass(frozen=True)
class LatencyEstimate:
    """One batch's roofline estimate, its parts kept apart (seconds)."""

    batch_size: int
    flops: float
    bytes: float
    compute_s: float  # every op's flops at the efficient peak, added up
    memory_s: float  # every op's bytes at the efficient bandwidth, added up
    kernels_s: float  # every op at its own roofline (the larger of the two), added up
    launch_s: float  # what the device waits for the host to issue ops, beyond kernels_s
    copy_s: float  # host side: stack the batch, copy it to the device and the output back
    compute_bound_s: float = 0.0  # the part of kernels_s spent in ops limited by compute

    @property
    def forward_s(self) -> float:
        return self.kernels_s + self.launch_s

    @property
    def total_s(self) -> float:
        return self.forward_s + self.copy_s

    @property
    def bound(self) -> str:
        """Which limit the device time is mostly spent against: ``compute`` or ``memory``."""
        return "compute" if self.compute_bound_s >= self.kernels_s - self.compute_bound_s else "memory"

    @property
    def launch_bound(self) -> bool:
        """The host issuing ops, not the device, sets the forward time."""
        return self.launch_s >= self.kernels_s


def estimate_latency(cost: ModelCost, gpu: Gpu, dtype: str, batch_size: int,
                     assumptions: Assumptions = Assumptions()) -> LatencyEstimate:
    """Roofline latency of one batch, end to end as ``latency_s`` of a profile means it."""
    a, width, b = assumptions, DTYPE_BYTES[dtype], batch_size
    peak = gpu.peak_flops(dtype) * a.compute_efficiency
    bandwidth = gpu.memory_bandwidth_bytes_per_s * a.memory_efficiency
    issued = done = compute = memory = kernels = compute_bound = 0.0
    for op in cost.ops:
        c, m = op.flops * b / peak, (op.weight_elems + op.activation_elems * b) * width / bandwidth
        issued += a.per_kernel_overhead_s
        done = max(done, issued) + max(c, m)
        compute, memory, kernels = compute + c, memory + m, kernels + max(c, m)
        compute_bound += c if c >= m else 0.0
    link = gpu.host_link_bytes_per_s * a.link_efficiency
    input_bytes = cost.input_bytes * (width / 4 if cost.float_input else 1) * b
    fresh = input_bytes / a.page_fault_bytes_per_s if input_bytes > a.fresh_pages_above_bytes else 0.0
    copy = (b * a.per_request_host_s + input_bytes / a.host_copy_bytes_per_s + fresh
            + input_bytes / min(a.pageable_copy_bytes_per_s, link) + cost.output_elems * width * b / link
            + 2 * a.transfer_latency_s)
    moved = sum(op.weight_elems + op.activation_elems * b for op in cost.ops) * width
    return LatencyEstimate(batch_size=b, flops=cost.flops * b, bytes=moved, compute_s=compute, memory_s=memory,
                           kernels_s=kernels, launch_s=done - kernels, copy_s=copy, compute_bound_s=compute_bound)


# The measured profiles the assumptions were chosen against (one H100 host); every other shipped measured
# GPU profile is held out: a check of the estimate on another GPU and another host.
FITTED_ON = ("h100-resnet50-fp16", "h100-bert-encoder-fp16", "h100-mlp-2048-fp32")


def residual_table(assumptions: Assumptions = Assumptions()) -> list[dict]:
    """Estimate against measured median, for every size of every shipped measured profile of a built-in
    model on a catalog GPU: rows of profile, model, gpu, dtype, batch_size, measured_s, estimate_s, residual
    (estimate / measured - 1) and held_out (not one of ``FITTED_ON``)."""
    rows = []
    for name, profile in _measured_gpu_profiles().items():
        cost, gpu = model_cost(profile.model_name), get_gpu(profile.device_name)
        for b in profile.batch_sizes:
            measured = profile.median_latency_s(b)
            estimate = estimate_latency(cost, gpu, profile.dtype, b, assumptions).total_s
            rows.append({"profile": name, "model": profile.model_name, "gpu": gpu.key, "dtype": profile.dtype,
                         "batch_size": b, "measured_s": measured, "estimate_s": estimate,
                         "residual": estimate / measured - 1, "held_out": name not in FITTED_ON})
    return rows


def uncertainty(assumptions: Assumptions = Assumptions()) -> dict:
    """The stated uncertainty an estimate records: the bound and the residuals behind it, on the profiles
    the assumptions were chosen against and, apart, on the held-out ones."""
    rows = residual_table(assumptions)

    def per_profile(selected: list[dict]) -> dict[str, dict[str, float]]:
        by_profile: dict[str, dict[str, float]] = {}
        for r in selected:
            by_profile.setdefault(r["profile"], {})[str(r["batch_size"])] = _round4(r["residual"])
        return by_profile

    fitted, held_out = [r for r in rows if not r["held_out"]], [r for r in rows if r["held_out"]]
    return {"bound": ROOFLINE_BOUND,
            "max_abs_residual": _round4(max((abs(r["residual"]) for r in fitted), default=0.0)),
            "residuals": per_profile(fitted),
            "held_out_residuals": per_profile(held_out),
            "notes": "estimate / measured median - 1 at every size of the measured H100 profiles the assumptions "
                     "were chosen against (docs/gpu.md); held_out_residuals: capsim calibrate on an H200 on "
                     "another host, where eager ops issued 1.4-1.8x faster (17.6-23 us each against 32-37 us), "
                     "so launch-bound estimates ran 32-84% high: the host's op-issue time is the largest error "
                     "on a machine other than the H100's"}


@cache
def _measured_gpu_profiles() -> dict:
    """Shipped measured profiles of a built-in model on a catalog GPU, in a dtype it runs (cached: the
    shipped files do not change while a process runs)."""
    found = {}
    for name in list_builtin_profiles():
        p = as_profile(name)
        if p.kind != "measured" or p.device != "cuda" or p.model_name not in BUILTIN_ARCHS or not p.device_name:
            continue
        try:
            get_gpu(p.device_name).peak_flops(p.dtype)
        except ProfileError:
            continue
        found[name] = p
    return found


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
            "assumption_sources": dict(ASSUMPTION_SOURCES),
            "uncertainty": uncertainty(assumptions),
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
            "memory_s": _round4(e.memory_s), "kernels_s": _round4(e.kernels_s), "launch_s": _round4(e.launch_s),
            "copy_s": _round4(e.copy_s), "total_s": _round4(e.total_s), "bound": e.bound,
            "launch_bound": e.launch_bound}


def _round4(x: float) -> float:
    return float(f"{x:.4g}")


def _utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
