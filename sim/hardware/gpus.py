"""The GPU catalog (``sim/data/gpus.yaml``): memory, bandwidth, dense peaks, host link and price per GPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from sim.errors import ProfileError, bad_value

GPU_CATALOG_PATH = Path(__file__).resolve().parents[1] / "data" / "gpus.yaml"
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}

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
    interconnect_bytes_per_s: float | None = None  # GPU to GPU, per direction (tensor-parallel all-reduce)
    node: str | None = None  # the instance that holds several (training across nodes)
    gpus_per_node: int | None = None
    node_network_bytes_per_s: float | None = None  # one node to the others, per direction

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
                 sources=dict(g["sources"]),
                 interconnect_bytes_per_s=float(g["interconnect"]["bytes_per_s"]) if "interconnect" in g else None,
                 **_node(g.get("node")))
        for key, g in raw["gpus"].items()
    }


def _node(node: dict | None) -> dict:
    if node is None:
        return {}
    return {"node": node["name"], "gpus_per_node": int(node["gpus"]),
            "node_network_bytes_per_s": float(node["network_bytes_per_s"])}


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


def profile_gpu(profile) -> str | None:
    """The catalog key of the GPU a profile describes (an estimate's ``estimate.gpu``, else the measured
    device's name matched in the catalog); None for a CPU profile or a GPU the catalog lacks."""
    estimate = profile.raw.get("estimate") or {}
    if estimate.get("gpu"):
        return estimate["gpu"]
    if profile.device != "cuda" or not profile.device_name:
        return None
    try:
        return get_gpu(profile.device_name).key
    except ProfileError:
        return None
