"""The pieces of a replica's cold start that a machine can measure about itself.

* checkpoint read, cold and warm: ``torch.save`` of the state dict to a scratch file, then
  ``torch.load`` (``weights_only``) once after dropping the file from the page cache and three
  times with it cached (median). The drop is ``posix_fadvise(POSIX_FADV_DONTNEED)`` on the file,
  then ``/proc/sys/vm/drop_caches`` where permitted if pages stayed; ``mincore`` tells what share
  of the file stayed resident, and the profile records it.
* host to device: the loaded tensors copied to the device, synchronised (0 on cpu: no copy).
* runtime start: ``import torch`` plus a first device op in a fresh interpreter (median of runs).
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

_RUNTIME_PROBE = """
import json, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
{context}
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "context_s": t2 - t1}}))
"""
_CONTEXT = {
    "cuda": "torch.zeros(1, device='cuda').add_(1); torch.cuda.synchronize()",
    "cpu": "torch.zeros(1).add_(1)",
}


def measure_load(model: torch.nn.Module, device: torch.device, scratch_dir: str | Path | None,
                 runtime_start_runs: int = 3) -> dict:
    """The ``load`` block of a profile, except ``warmup_s`` (the benchmark's first calls)."""
    notes: list[str] = []
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    weight_bytes = sum(t.numel() * t.element_size() for t in state.values())
    with tempfile.TemporaryDirectory(dir=scratch_dir, prefix="capsim-load-") as tmp:
        path = Path(tmp) / "weights.pt"
        torch.save(state, path)
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        notes.append(f"checkpoint: torch.save state_dict, {_filesystem(path)}")
        method = drop_from_page_cache(path)
        resident = resident_fraction(path)
        cold_s, loaded = _timed_load(path)
        dropped = resident is not None and resident < 0.05
        notes.append(f"page cache: {method}; resident after drop: "
                     f"{'unknown' if resident is None else f'{resident:.0%}'}")
        warm_s = statistics.median(_timed_load(path)[0] for _ in range(3))
    to_device_s = _host_to_device_s(loaded, device)
    if device.type == "cpu":
        notes.append("host_to_device_s = 0: on cpu the weights are used where they were loaded")
    runs = runtime_start(device.type, runtime_start_runs)
    read_s = cold_s if dropped else warm_s
    if not dropped:
        notes.append("could not verify the cold read: checkpoint_read_cold_s is null and the load rate "
                     "uses the warm read")
    return {
        "weight_bytes": weight_bytes,
        "checkpoint_read_cold_s": cold_s if dropped else None,
        "checkpoint_read_warm_s": warm_s,
        "host_to_device_s": to_device_s,
        "runtime_start_s": statistics.median(r["import_s"] + r["context_s"] for r in runs) if runs else None,
        "torch_import_s": statistics.median(r["import_s"] for r in runs) if runs else None,
        "device_context_s": statistics.median(r["context_s"] for r in runs) if runs else None,
        "runtime_start_runs": len(runs),
        "warmup_s": None,
        "load_rate_bytes_per_s": weight_bytes / (read_s + to_device_s) if read_s + to_device_s > 0 else None,
        "page_cache": {"method": method, "resident_after_drop": resident, "dropped": dropped},
        "notes": notes,
    }


def _timed_load(path: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    state = torch.load(path, map_location="cpu", weights_only=True)
    return time.perf_counter() - start, state


def _host_to_device_s(state: dict, device: torch.device) -> float:
    if device.type == "cpu":
        return 0.0
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    on_device = {k: v.to(device) for k, v in state.items()}
    torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    del on_device
    return elapsed


def runtime_start(device_type: str, runs: int) -> list[dict]:
    """``import torch`` and a first device op, timed inside fresh interpreters."""
    code = _RUNTIME_PROBE.format(context=_CONTEXT[device_type])
    results = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              check=False)
        if done.returncode == 0:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def drop_from_page_cache(path: Path) -> str:
    """Evict ``path`` from the page cache as far as this process may; say how.

    ``posix_fadvise(DONTNEED)`` first (this file only); the machine-wide ``drop_caches`` only if
    pages are still resident after it.
    """
    os.sync()
    method = "none available"
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            method = "posix_fadvise(POSIX_FADV_DONTNEED)"
        finally:
            os.close(fd)
    if (resident_fraction(path) or 0.0) < 0.05 and method != "none available":
        return method
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1")
        return "/proc/sys/vm/drop_caches"
    except OSError:
        return method


def resident_fraction(path: Path) -> float | None:
    """Share of the file's pages in the page cache (Linux ``mincore``), None where unavailable."""
    size = path.stat().st_size
    if size == 0 or not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = os.sysconf("SC_PAGE_SIZE")
    pages = (size + page - 1) // page
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                return None
            return sum(v & 1 for v in vec) / pages
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def _filesystem(path: Path) -> str:
    """The mount the scratch file lives on (a tmpfs read is a memory copy, not a disk read)."""
    best, fstype = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, kind, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > len(best):
                best, fstype = mount, kind
    except OSError:
        return "filesystem unknown"
    return f"on {fstype} ({best})"
