"""Memory high-water marks per batch size, and the largest batch that fits.

* cuda: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only: weights,
  activations, workspaces; not the CUDA context nor the caching allocator's slack);
  the total is the device's memory.
* cpu: the process's peak resident set (``VmHWM`` in ``/proc/self/status``, reset by writing ``5``
  to ``/proc/self/clear_refs``); it includes the Python and torch runtime. The total is the
  smaller of ``MemTotal`` and the cgroup's ``memory.max``. Where Linux lacks these: null.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

HEADROOM = 0.9  # a batch "fits" when its high-water mark stays under 90% of the total


class MemoryProbe:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    @property
    def method(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated (tensors: weights, activations, workspaces)"
        return "peak resident set of the process (VmHWM after clear_refs), runtime included"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        with contextlib.suppress(OSError):  # not Linux, or not permitted: the peak is since start
            Path("/proc/self/clear_refs").write_text("5")

    def peak_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return _status_kib("VmHWM")

    def total_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.get_device_properties(self.device).total_memory)
        return host_memory_bytes()


def host_memory_bytes() -> int | None:
    """Physical memory this process may use: MemTotal, capped by a cgroup v2 limit."""
    total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
    except OSError:
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit() and total is not None:
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def max_batch_size_fits(peaks: dict[int, int | None], total: int | None) -> tuple[int | None, str]:
    """Extrapolate the high-water mark linearly from the two largest sizes to ``HEADROOM * total``.

    Returns the batch size (None when it cannot be told) and how it was found.
    """
    points = sorted((b, p) for b, p in peaks.items() if p is not None)
    if total is None or len(points) < 2:
        return None, "unknown: fewer than two peak-memory measurements or no total"
    (b1, p1), (b2, p2) = points[-2], points[-1]
    budget = HEADROOM * total
    if p2 > budget:
        fitting = [b for b, p in points if p <= budget]
        return (max(fitting) if fitting else 0), "largest measured size under 90% of the total"
    slope = (p2 - p1) / (b2 - b1)
    if slope <= 0:
        return None, (f"unknown: the high-water mark did not grow from batch {b1} to {b2} "
                      "(allocator reuse); measure larger sizes")
    return b2 + int((budget - p2) // slope), (f"linear extrapolation of the high-water mark from batch "
                                              f"{b1} and {b2} to 90% of the total")
