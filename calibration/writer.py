"""Assembling and writing the ``capsim.profile/1`` document (docs/profile.md)."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from calibration.bench import BenchResult
from sim.profiles.profile import SCHEMA

SIGNIFICANT_DIGITS = 4


def round_sig(x: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """``x`` to ``digits`` significant digits (keeps files small; timers are not finer anyway)."""
    return None if x is None else float(f"{x:.{digits}g}")


def _times(values) -> list[float]:
    return [round_sig(v) for v in values]


def environment(device: torch.device) -> dict:
    cpu = _cpu_name()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "device": device.type,
        "device_name": gpu or cpu,
        "cpu": cpu,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "driver": _nvidia_driver() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def build_document(*, model: dict, env: dict, bench: BenchResult, load: dict | None,
                   memory: dict, calibration: dict, server: dict | None = None) -> dict:
    """The profile document; every time rounded to four significant digits. ``server``: how the measured
    server waited for work (``{"wait": "block" | "poll"}``), what the serving replay's idle gaps were."""
    batches = [
        {"batch_size": b, "latency_s": _times(r.latency_s), "forward_s": _times(r.forward_s),
         "first_call_s": round_sig(r.first_call_s), "peak_memory_bytes": r.peak_memory_bytes,
         "host_overhead_s": _times(r.host_overhead_s)}
        for b, r in sorted(bench.sizes.items())
    ]
    replay = None
    if bench.replay is not None:
        rp = bench.replay
        replay = {"batch_sizes": rp.batch_sizes, "gaps_s": _times(rp.gaps_s), "latency_s": _times(rp.latency_s),
                  "host_overhead_s": _times(rp.host_overhead_s),
                  "median_ratio_to_benchmark": round_sig(rp.median_ratio_to_benchmark)}
    if load is not None:
        load = {k: (round_sig(v) if isinstance(v, float) else v) for k, v in load.items()}
    return {
        "schema": SCHEMA,
        "kind": "measured",
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": env,
        "model": model,
        "batches": batches,
        "host_overhead_s": [x for entry in batches for x in entry["host_overhead_s"]],
        "serving_replay": replay,
        "idle_response": _idle_response(bench),
        "dispatch": _dispatch(bench),
        "server": server,
        "memory": memory,
        "load": load,
        "calibration": calibration,
        "estimate": None,
    }


def _idle_response(bench: BenchResult) -> dict | None:
    response = bench.idle.response() if bench.idle is not None else None
    if response is not None:
        response.update(gaps_s=_times(response["gaps_s"]), ratio=[round_sig(r) for r in response["ratio"]])
    return response


def _dispatch(bench: BenchResult) -> dict | None:
    dispatch = bench.idle.dispatch() if bench.idle is not None else None
    if dispatch is not None:
        dispatch["idle_s"] = _times(dispatch["idle_s"])
    return dispatch


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
