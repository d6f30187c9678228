"""A real data-parallel training run: ``world_size`` processes, PyTorch DDP, timed step by step.

What the training prediction is checked against (docs/validation.md, "Training"). Each rank builds the
same model from the same seed, wraps it in ``DistributedDataParallel`` (gloo on CPU, NCCL on GPUs;
``gradient_as_bucket_view=True``, ``bucket_cap_mb`` as asked) and runs ``warmup + steps`` optimiser
steps of ``accumulation`` micro-batches each (``no_sync`` on all but the last, as gradient accumulation
is done), with :class:`calibration.training.TrainStep`: the same forward, backward and optimiser step that
``capsim calibrate --mode train`` timed. One process runs the model without DDP (what one device trains).
Rank 0 records the wall time of every step (end to end, no barrier inside); a step's time is that of
every rank, the gradient all-reduce tying them together.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from calibration.distributed import run_ranks, synchronize
from calibration.training import TrainStep, model_and_inputs


@dataclass(frozen=True)
class DdpRunSpec:
    model: str
    world_size: int
    micro_batch: int
    accumulation: int = 1
    steps: int = 30
    warmup: int = 5
    device: str = "cpu"
    precision: str = "fp32"
    optimizer: str = "adam"
    threads: int | None = 1
    bucket_mb: float = 25.0
    seq_len: int | None = None
    seed: int = 0

    @property
    def global_batch(self) -> int:
        return self.world_size * self.micro_batch * self.accumulation


def run_ddp(spec: DdpRunSpec) -> list[float]:
    """Rank 0's wall time of each timed step, seconds (one fresh process per rank, one without DDP)."""
    return run_ranks(_worker, spec.world_size, spec.device, spec.threads, spec)


def _worker(rank: int, world_size: int, device: torch.device, spec: DdpRunSpec) -> list[float]:
    _, model, inputs = model_and_inputs(spec.model, spec.seq_len, spec.seed, device, (spec.micro_batch,), rank)
    batch = inputs[spec.micro_batch]
    wrapped = model if world_size == 1 else DistributedDataParallel(
        model, bucket_cap_mb=spec.bucket_mb, gradient_as_bucket_view=True)
    step = TrainStep(model, spec.optimizer, spec.precision, device, forward=wrapped)
    times = []
    last = time.perf_counter()
    for i in range(spec.warmup + spec.steps):
        step.clear()
        for k in range(spec.accumulation):
            syncing = k == spec.accumulation - 1 or world_size == 1
            with contextlib.nullcontext() if syncing else wrapped.no_sync():
                step.forward_backward(batch)
        step.update()
        synchronize(device)
        now = time.perf_counter()
        if i >= spec.warmup:
            times.append(now - last)
        last = now
    return times
