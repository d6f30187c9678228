"""A model on its device, run the way a minimal server runs it, with clocks around each part.

One batch through the serving loop is: dequeue the requests, *serve* them (assemble the batch
from per-request host tensors, copy it to the device, forward under ``torch.inference_mode``,
copy the result back), then split the result into one response per request. ``latency_s`` in a
profile is the serve part; ``host_overhead_s`` is dequeue plus split.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import torch
from torch import nn

from calibration.errors import CalibrationError
from calibration.models import MakeInput, described, out_of_memory
from sim.errors import shown

Request = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class LoopTiming:
    """One batch through the serving loop (seconds)."""

    latency_s: float  # serve: assemble, to device, forward, back to host
    host_overhead_s: float  # dequeue + response split


class Harness:
    """Runs ``model`` on ``device`` with fresh per-request inputs from ``make_input``."""

    def __init__(self, model: nn.Module, make_input: MakeInput, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.model, self.make_input, self.device, self.dtype = model, make_input, device, dtype
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def requests(self, n: int) -> list[Request]:
        """``n`` fresh requests as host tensors (floating inputs already in the model's dtype)."""
        return [self._as_request(self._one_input()) for _ in range(n)]

    def _one_input(self):
        try:
            return self.make_input(1)
        except Exception as exc:  # noqa: BLE001 - the user's make_input may raise anything
            hint = "; it must fit in memory many times over" if out_of_memory(exc) else ""
            raise CalibrationError(f"make_input(1) raised {described(exc)}{hint}") from None

    def _as_request(self, x) -> Request:
        parts = tuple(x) if isinstance(x, tuple | list) else (x,)
        if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
            raise CalibrationError(f"make_input(1) returned {type(x).__name__} {shown(x)}; it must return a tensor "
                                   "or a tuple of tensors, batch first")
        return tuple(p.to(self.dtype) if p.is_floating_point() else p for p in parts)

    def to_device(self, batch: Sequence[Request]) -> Request:
        """Assemble requests into one batch and copy it to the device."""
        return tuple(torch.cat(part).to(self.device) for part in zip(*batch, strict=True))

    def serve(self, batch: Sequence[Request]):
        """Assemble, copy, forward, copy back: the response tensors on the host."""
        with torch.inference_mode():
            return _to_host(self.model(*self.to_device(batch)))

    def time_forward(self, batch: Sequence[Request]) -> float:
        """Forward pass only, inputs already on the device, device-synchronised on both sides."""
        with torch.inference_mode():
            inputs = self.to_device(batch)
            self.sync()
            start = time.perf_counter()
            self.model(*inputs)
            self.sync()
            return time.perf_counter() - start

    def through_loop(self, batch: Sequence[Request]) -> LoopTiming:
        """One batch through a minimal serving loop: dequeue, serve, split into futures."""
        for request in batch:
            self._queue.put((request, Future()))
        start = time.perf_counter()
        pending = [self._queue.get_nowait() for _ in range(len(batch))]
        served_at = time.perf_counter()
        out = self.serve([request for request, _ in pending])
        self.sync()
        split_at = time.perf_counter()
        for (_, future), response in zip(pending, _split(out, len(pending)), strict=True):
            future.set_result(response)
        end = time.perf_counter()
        return LoopTiming(latency_s=split_at - served_at,
                          host_overhead_s=(served_at - start) + (end - split_at))


def _to_host(out):
    if isinstance(out, torch.Tensor):
        return out.cpu()
    if isinstance(out, tuple | list):
        return type(out)(_to_host(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_host(v) for k, v in out.items()}
    return out


def _split(out, n: int) -> list:
    """One response per request from a batched output."""
    if isinstance(out, torch.Tensor) and out.dim() > 0 and out.shape[0] == n:
        return list(out.unbind(0))
    if isinstance(out, tuple | list):
        return [tuple(parts) for parts in zip(*(_split(o, n) for o in out), strict=True)]
    if isinstance(out, dict):
        columns = {k: _split(v, n) for k, v in out.items()}
        return [{k: col[i] for k, col in columns.items()} for i in range(n)]
    return [out] * n
