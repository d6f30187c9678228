"""Roofline estimates of service time for hardware we could not measure.

The built-in models' architectures are described here once (``calibration/`` builds its torch
models from these same descriptions), so their parameters, FLOPs and bytes moved per request can
be counted analytically. An estimate for batch size ``b`` on a GPU is

    max(flops(b) / (peak_flops * compute_efficiency), bytes(b) / (bandwidth * memory_efficiency))
    + kernels * per_kernel_overhead_s                                   (launch)
    + io_bytes(b) / (host_link * link_efficiency) + 2 * transfer_latency_s (copies)

with the efficiencies and overheads stated in :class:`Assumptions` (assumed, not measured).
:func:`estimate_profile` turns these numbers into a ``capsim.profile/1`` document of kind
``"estimate"``. No torch here: the simulator and the planner use this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from sim.errors import ProfileError, bad_value

GPU_CATALOG_PATH = Path(__file__).parent / "data" / "gpus.yaml"
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
TOKEN_ID_BYTES = 8  # int64 token ids, as torch embeddings take them


# --- architectures of the built-in models -------------------------------------------------------

@dataclass(frozen=True)
class MlpArch:
    """Tabular fraud-scoring MLP: dense features -> ReLU hidden layers -> one sigmoid score."""

    in_features: int = 256
    hidden: tuple[int, ...] = (1024, 1024, 512)
    out_features: int = 1


@dataclass(frozen=True)
class ResNetArch:
    """ResNet-50 v1.5 (stride in the 3x3 conv of each bottleneck), ImageNet head."""

    blocks: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    expansion: int = 4
    image_size: int = 224
    num_classes: int = 1000


@dataclass(frozen=True)
class TransformerArch:
    """A transformer over token ids: a BERT-style encoder classifier or a GPT-style decoder."""

    causal: bool
    vocab_size: int
    max_positions: int
    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int
    seq_len: int = 128
    num_labels: int = 2  # encoder: classifier on the pooled first token
    type_vocab_size: int = 2  # encoder only


BUILTIN_ARCHS: dict[str, MlpArch | ResNetArch | TransformerArch] = {
    "mlp": MlpArch(),
    "resnet50": ResNetArch(),
    "bert-base": TransformerArch(causal=False, vocab_size=30522, max_positions=512, d_model=768,
                                 n_heads=12, n_layers=12, d_ff=3072),
    "decoder": TransformerArch(causal=True, vocab_size=32000, max_positions=1024, d_model=512,
                               n_heads=8, n_layers=6, d_ff=2048),
}


def builtin_arch(name: str, seq_len: int | None = None) -> MlpArch | ResNetArch | TransformerArch:
    """The architecture of a built-in model, with ``seq_len`` applied to the transformers."""
    if name not in BUILTIN_ARCHS:
        raise ProfileError(bad_value("model", name, f"built-in models are {', '.join(BUILTIN_ARCHS)}"))
    arch = BUILTIN_ARCHS[name]
    if seq_len is None or not isinstance(arch, TransformerArch):
        return arch
    if not 1 <= seq_len <= arch.max_positions:
        raise ProfileError(bad_value("seq_len", seq_len, f"1..{arch.max_positions} for {name}"))
    return TransformerArch(**{**arch.__dict__, "seq_len": seq_len})


# --- analytic cost per request ------------------------------------------------------------------

@dataclass(frozen=True)
class ModelCost:
    """What one request (one sample of the batch) costs, counted from the architecture.

    ``flops`` counts 2 per multiply-add of matmuls, convolutions and attention (as
    ``torch.utils.flop_counter`` does); ``activation_elems`` is the elements every op reads and
    writes once; ``kernels`` the ops eager PyTorch launches per forward (independent of batch).
    """

    parameters: int
    buffers: int  # float buffers saved with the weights (BatchNorm running statistics)
    flops: float
    activation_elems: float
    peak_activation_elems: float  # largest set of activations alive at once
    input_bytes: int  # host -> device per request (float inputs in the model dtype)
    output_elems: int  # device -> host per request
    kernels: int
    float_input: bool = True  # False: token ids (int64) whatever the dtype


def model_cost(name: str, seq_len: int | None = None) -> ModelCost:
    """Analytic :class:`ModelCost` of a built-in model (inputs counted in fp32 bytes for floats)."""
    arch = builtin_arch(name, seq_len)
    if isinstance(arch, MlpArch):
        return _mlp_cost(arch)
    if isinstance(arch, ResNetArch):
        return _resnet_cost(arch)
    return _transformer_cost(arch)


def _mlp_cost(a: MlpArch) -> ModelCost:
    dims = (a.in_features, *a.hidden, a.out_features)
    pairs = list(zip(dims[:-1], dims[1:], strict=True))
    params = sum(i * o + o for i, o in pairs)
    acts = sum(i + o + 2 * o for i, o in pairs)  # linear in+out, then ReLU (sigmoid last) in+out
    return ModelCost(parameters=params, buffers=0, flops=float(sum(2 * i * o for i, o in pairs)),
                     activation_elems=float(acts), peak_activation_elems=float(max(i + o for i, o in pairs)),
                     input_bytes=4 * a.in_features, output_elems=a.out_features, kernels=2 * len(pairs))


class _Counter:
    """Walks a convolutional network, adding up parameters, MACs, traffic and kernels."""

    def __init__(self) -> None:
        self.params = self.buffers = self.kernels = 0
        self.macs = self.acts = self.peak = 0.0

    def op(self, in_elems: float, out_elems: float, macs: float = 0.0, params: int = 0) -> None:
        self.params += params
        self.macs += macs
        self.acts += in_elems + out_elems
        self.peak = max(self.peak, in_elems + out_elems)
        self.kernels += 1

    def conv_bn(self, c_in: int, c_out: int, k: int, stride: int, size: int) -> int:
        out = math.ceil(size / stride)
        self.op(c_in * size * size, c_out * out * out, c_out * out * out * c_in * k * k, c_out * c_in * k * k)
        self.op(c_out * out * out, c_out * out * out, params=2 * c_out)  # BatchNorm weight and bias
        self.buffers += 2 * c_out  # running mean and variance
        return out


def _resnet_cost(a: ResNetArch) -> ModelCost:
    c = _Counter()
    size = c.conv_bn(3, a.width, 7, 2, a.image_size)
    c.op(a.width * size**2, a.width * size**2)  # ReLU
    c.op(a.width * size**2, a.width * (size // 2) ** 2)  # 3x3 max pool, stride 2
    size //= 2
    c_in = a.width
    for stage, n_blocks in enumerate(a.blocks):
        width = a.width * 2**stage
        for block in range(n_blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            c_out = width * a.expansion
            c.conv_bn(c_in, width, 1, 1, size)
            c.op(width * size**2, width * size**2)  # ReLU
            out = c.conv_bn(width, width, 3, stride, size)
            c.op(width * out**2, width * out**2)  # ReLU
            c.conv_bn(width, c_out, 1, 1, out)
            if block == 0:
                c.conv_bn(c_in, c_out, 1, stride, size)  # projection shortcut
            c.op(2 * c_out * out**2, c_out * out**2)  # residual add
            c.op(c_out * out**2, c_out * out**2)  # ReLU
            c_in, size = c_out, out
    c.op(c_in * size**2, c_in)  # global average pool
    c.op(c_in, a.num_classes, c_in * a.num_classes, c_in * a.num_classes + a.num_classes)  # fc
    return ModelCost(parameters=c.params, buffers=c.buffers, flops=2 * c.macs, activation_elems=c.acts,
                     peak_activation_elems=c.peak, input_bytes=4 * 3 * a.image_size**2,
                     output_elems=a.num_classes, kernels=c.kernels)


def _transformer_cost(a: TransformerArch) -> ModelCost:
    d, ff, n, L = a.d_model, a.d_ff, a.n_layers, a.seq_len
    layer_params = (3 * d * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d) + 2 * 2 * d
    layer_flops = 2 * L * (4 * d * d + 2 * d * ff) + 4 * L * L * d  # projections, FFN, QK^T and AV
    layer_acts = L * (22 * d + 4 * ff)  # qkv, attention, out proj, add, LN, ff1, GELU, ff2, add, LN
    layer_peak = max(L * (d + ff), a.n_heads * L * L + 3 * L * d)  # FFN hidden, or unfused scores
    if a.causal:  # tied LM head on the last position only, after a final LayerNorm
        params = a.vocab_size * d + a.max_positions * d + n * layer_params + 2 * d
        head_flops, out, extra_kernels = 2 * d * a.vocab_size, a.vocab_size, 4  # emb, pos add, LN, head
    else:  # BERT: word + position + type embeddings, LayerNorm; pooler (tanh) and classifier
        params = (a.vocab_size + a.max_positions + a.type_vocab_size) * d + 2 * d + n * layer_params
        params += d * d + d + d * a.num_labels + a.num_labels
        head_flops, out, extra_kernels = 2 * d * d + 2 * d * a.num_labels, a.num_labels, 10
    return ModelCost(parameters=params, buffers=0, flops=float(n * layer_flops + head_flops),
                     activation_elems=float(n * layer_acts + 4 * L * d + out),
                     peak_activation_elems=float(layer_peak), input_bytes=TOKEN_ID_BYTES * L,
                     output_elems=out, kernels=10 * n + extra_kernels, float_input=False)


# --- the GPU catalog --------------------------------------------------------------------------

@dataclass(frozen=True)
class Gpu:
    """One catalog entry of ``sim/data/gpus.yaml``; every figure there names its public source."""

    key: str
    name: str
    memory_bytes: int
    memory_bandwidth_bytes_per_s: float
    peak_tflops: dict[str, float | None]
    host_link_bytes_per_s: float
    usd_per_hour: float
    match: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)

    def peak_flops(self, dtype: str) -> float:
        tflops = self.peak_tflops.get(dtype)
        if not tflops:
            allowed = [k for k, v in self.peak_tflops.items() if v]
            raise ProfileError(bad_value("dtype", dtype, f"{self.key} supports {', '.join(allowed)}"))
        return tflops * 1e12


@cache
def gpu_catalog(path: Path = GPU_CATALOG_PATH) -> dict[str, Gpu]:
    """The GPU catalog keyed by its short names (``H100-SXM``, ``T4``, ...)."""
    raw = yaml.safe_load(path.read_text())
    return {
        key: Gpu(key=key, name=g["name"], memory_bytes=int(g["memory_bytes"]),
                 memory_bandwidth_bytes_per_s=float(g["memory_bandwidth_bytes_per_s"]),
                 peak_tflops=dict(g["peak_tflops"]), host_link_bytes_per_s=float(g["host_link"]["bytes_per_s"]),
                 usd_per_hour=float(g["usd_per_hour"]), match=tuple(g.get("match", ())),
                 sources=dict(g["sources"]))
        for key, g in raw["gpus"].items()
    }


def get_gpu(name: str) -> Gpu:
    """A catalog GPU by key (case-insensitive) or by a device name such as torch reports it."""
    catalog, wanted = gpu_catalog(), name.lower()
    for key, gpu in catalog.items():
        if wanted == key.lower():
            return gpu
    hits = [(len(m), gpu) for gpu in catalog.values() for m in gpu.match if m.lower() in wanted]
    if hits:  # the longest match wins ("NVIDIA L40S" also contains "NVIDIA L4")
        return max(hits, key=lambda hit: hit[0])[1]
    raise ProfileError(bad_value("gpu", name, f"the catalog has {', '.join(catalog)}"))


# --- the estimate -------------------------------------------------------------------------------

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
    ``sim.profile.Profile``, path or shipped name) every sample is scaled by the roofline ratio
    target/source of its batch size. Without it, each size's samples are the roofline latency times
    the *shape* of a measured distribution: ``shape_profile``'s samples at the nearest measured size
    divided by their median (or, with no shape profile, ``samples`` copies of the point estimate).
    """
    from sim.profile import as_profile  # sim.profile never imports this module

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
    from sim.profile import BUILTIN_DIR

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
