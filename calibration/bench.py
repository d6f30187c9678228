"""The benchmark: first calls, per-size samples, host overhead and a serving replay.

Order matters and is part of the method (docs/calibration.md):

1. **First calls**, before any warm-up: one batch of each size, in ascending order, in a process
   that has run nothing else. The smallest size's first call therefore carries the process-wide
   one-time costs; later sizes pay only what their new shape adds (torch shares work across shapes).
2. **Per size**, ascending: ``warmup`` batches, then ``samples`` pairs of (a batch through the
   serving loop -> ``latency_s`` and ``host_overhead_s``; a forward-only batch -> ``forward_s``),
   each with fresh inputs; the memory high-water mark covers the warm-up and samples of that size.
3. **Idle sweep** (``calibration/idle_sweep.py``): a batch's slowdown after the server waited for work
   ``g`` = 0.1 ms..0.3 s, waited the way the server waits (``wait``, sim/serving/waiting.py), against the
   same size back to back: the profile's ``idle_response`` and ``dispatch.idle_s``.
4. **Serving replay**: batch sizes drawn log-uniformly from 1..max with exponential idle gaps
   sized for ``replay_utilisation``, each gap waited the way the server waits for a deadline
   (``calibration.server.Inbox``); sizes outside the profiled set meet their first call here, as they
   would in service.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from calibration.errors import CalibrationError
from calibration.harness import Harness, LoopTiming
from calibration.idle_sweep import BACK_TO_BACK, GAPS_S, IdleSweep, run_idle_sweep, swept_sizes
from calibration.memory import MemoryProbe
from calibration.models import described, out_of_memory
from calibration.server import Clock, Inbox


@dataclass(frozen=True)
class BenchSettings:
    batch_sizes: tuple[int, ...]
    samples: int = 100
    warmup: int = 10
    replay_batches: int = 100
    replay_utilisation: float = 0.2
    wait: str = "block"  # how the server waits for work (sim.serving.waiting.WAITS): the idle gaps are waited so
    idle_rounds: int = 6  # rounds of the idle sweep; 0 skips it
    seed: int = 0
    progress: bool = True


@dataclass
class SizeResult:
    batch_size: int
    first_call_s: float
    latency_s: list[float] = field(default_factory=list)
    forward_s: list[float] = field(default_factory=list)
    host_overhead_s: list[float] = field(default_factory=list)
    peak_memory_bytes: int | None = None


@dataclass
class Replay:
    batch_sizes: list[int]
    gaps_s: list[float]
    latency_s: list[float]
    host_overhead_s: list[float]
    median_ratio_to_benchmark: float | None


@dataclass
class BenchResult:
    sizes: dict[int, SizeResult]
    replay: Replay | None
    baseline_memory_bytes: int | None
    wall_s: float
    idle: IdleSweep | None = None

    def median_latency_s(self, batch_size: int) -> float:
        """Median benchmark latency, interpolated linearly in batch size (flat below the smallest)."""
        sizes = sorted(self.sizes)
        medians = [float(np.median(self.sizes[b].latency_s)) for b in sizes]
        return float(np.interp(batch_size, sizes, medians))


def run_benchmark(h: Harness, settings: BenchSettings, memory: MemoryProbe) -> BenchResult:
    sizes = tuple(sorted(settings.batch_sizes))
    per_size = 1 + settings.warmup + 2 * settings.samples
    sweep = settings.idle_rounds * len(swept_sizes(sizes)) * len(GAPS_S) * (BACK_TO_BACK + 1)
    total = len(sizes) * per_size + sweep + settings.replay_batches
    start = time.perf_counter()
    with tqdm(total=total, disable=not settings.progress, unit="batch", desc="calibrate",
              dynamic_ncols=True) as bar:
        memory.reset()
        baseline = memory.peak_bytes()
        results = {}
        for b in sizes:
            bar.set_postfix_str(f"first call b={b}")
            results[b] = SizeResult(b, _run(h, b, lambda reqs: h.through_loop(reqs)).latency_s)
            bar.update()
        for b in sizes:
            bar.set_postfix_str(f"b={b}")
            _measure_size(h, results[b], settings, memory, bar)
        result = BenchResult(results, None, baseline, 0.0)
        if settings.idle_rounds:
            bar.set_postfix_str(f"idle sweep ({settings.wait})")
            result.idle = run_idle_sweep(h, sizes, settings.idle_rounds, settings.wait, settings.seed, bar.update)
        if settings.replay_batches:
            bar.set_postfix_str("serving replay")
            result.replay = _replay(h, result, settings, bar)
    result.wall_s = time.perf_counter() - start
    return result


def _run(h: Harness, b: int, step, requests=None):
    """One timed step on ``b`` fresh requests (or those given); a model failure becomes a one-line error."""
    requests = h.requests(b) if requests is None else requests
    try:
        return step(requests)
    except Exception as exc:  # noqa: BLE001 - the user's model may raise anything (dtype, shape, memory)
        text = described(exc)
        hint = ("; try another --dtype" if "not implemented for" in text
                else "; out of memory: try smaller --batch-sizes" if out_of_memory(exc) else "")
        dtype = str(h.dtype).removeprefix("torch.")
        raise CalibrationError(f"the model failed at batch size {b} on {h.device.type} in {dtype}: "
                               f"{text}{hint}") from None


def _measure_size(h: Harness, result: SizeResult, settings: BenchSettings, memory: MemoryProbe,
                  bar: tqdm) -> None:
    b = result.batch_size
    memory.reset()
    for _ in range(settings.warmup):
        _run(h, b, lambda reqs: (h.serve(reqs), h.sync()))  # a device error surfaces at the sync
        bar.update()
    for _ in range(settings.samples):
        timing: LoopTiming = _run(h, b, h.through_loop)
        result.latency_s.append(timing.latency_s)
        result.host_overhead_s.append(timing.host_overhead_s)
        result.forward_s.append(_run(h, b, h.time_forward))
        bar.update(2)
    result.peak_memory_bytes = memory.peak_bytes()


def _replay(h: Harness, bench: BenchResult, settings: BenchSettings, bar: tqdm) -> Replay:
    rng = np.random.default_rng(settings.seed)
    n, largest = settings.replay_batches, max(bench.sizes)
    sizes = np.clip(np.rint(np.exp(rng.uniform(0.0, math.log(largest), n))), 1, largest).astype(int)
    mean_service = float(np.mean([bench.median_latency_s(int(b)) for b in sizes]))
    u = settings.replay_utilisation
    gaps = rng.exponential(mean_service * (1 - u) / u, n)
    latency, overhead = [], []
    for b, gap in zip(sizes, gaps, strict=True):
        requests = h.requests(int(b))
        idle(float(gap), settings.wait)
        timing = _run(h, int(b), h.through_loop, requests)
        latency.append(timing.latency_s)
        overhead.append(timing.host_overhead_s)
        bar.update()
    ratios = [lat / bench.median_latency_s(int(b)) for b, lat in zip(sizes, latency, strict=True)]
    return Replay(batch_sizes=sizes.tolist(), gaps_s=gaps.tolist(), latency_s=latency,
                  host_overhead_s=overhead, median_ratio_to_benchmark=float(np.median(ratios)))



def idle(gap_s: float, wait: str) -> None:
    """Sit out an idle gap the way a server that waits like ``wait`` waits for a deadline (its inbox's own code)."""
    Inbox(wait, Clock(time.perf_counter())).wait(0, gap_s)
