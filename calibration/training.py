"""``capsim calibrate --mode train``: measure one model's training steps and this machine's all-reduce.

1. **Steps**, in a fresh process of a one-rank torch.distributed group with ``threads`` torch threads
   (what one data-parallel rank is and gets: a long-lived process runs faster once its allocator has
   settled, and a rank's process also runs the backend's threads): per micro-batch size, ascending, ``warmup`` untimed steps, then ``samples`` pairs of (forward and backward
   of one micro-batch, device-synchronised -> ``forward_backward_s``; the optimiser step after it ->
   ``optimizer_s``), gradients cleared untimed before each. The memory high-water mark per size as in
   serving calibration (``calibration/memory.py``).
2. **All-reduce**, in ``world_size`` fresh processes (``calibration/distributed.py``): per message size,
   ascending, a few untimed then ``allreduce_samples`` timed ``all_reduce`` calls of a float32 buffer,
   each started after a barrier and timed on rank 0. Sizes: powers of four from 4 KiB to 64 MiB, plus
   the model's gradient bytes.

The step a rank runs is :class:`TrainStep`, the same code the real data-parallel runs use
(``calibration/ddp_run.py``): a loss that reads every output (the mean of its squares), Adam(W), SGD or
SGD with momentum, mixed precision by autocast on GPUs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from tqdm import tqdm

from calibration.calibrate import resolve_device
from calibration.distributed import BACKENDS, run_ranks, synchronize
from calibration.errors import CalibrationError
from calibration.memory import MemoryProbe
from calibration.models import build_model, described
from calibration.writer import environment, round_sig
from sim.profiles.profile import SCHEMA_V3

AUTOCAST = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}
ALLREDUCE_SIZES = tuple(4**k * 1024 for k in range(1, 9))  # 4 KiB .. 64 MiB
ALLREDUCE_WARMUP = 3


@dataclass(frozen=True)
class TrainCalibrationRequest:
    model: str
    micro_batches: tuple[int, ...]
    device: str = "cpu"
    precision: str = "fp32"
    optimizer: str = "adam"
    samples: int = 30
    warmup: int = 5
    world_size: int = 2
    allreduce_samples: int = 20
    threads: int | None = 1
    seq_len: int | None = None
    seed: int = 0
    progress: bool = True
    command: list[str] = field(default_factory=list)


class TrainStep:
    """One rank's training step on ``model``: forward and backward of micro-batches, then the optimiser."""

    def __init__(self, model: torch.nn.Module, optimizer: str, precision: str, device: torch.device,
                 forward: torch.nn.Module | None = None) -> None:
        """``forward``: what the micro-batches run through (a DDP wrapper of ``model``; default ``model``)."""
        self.model, self.device, self.precision = forward or model, device, precision
        params = [p for p in model.parameters() if p.requires_grad]
        if optimizer == "adam":
            self.optimizer = torch.optim.AdamW(params, lr=1e-4)
        else:
            self.optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9 if optimizer == "sgd-momentum" else 0.0)

    def forward_backward(self, inputs) -> None:
        mixed = self.precision in AUTOCAST
        with torch.autocast(self.device.type, dtype=AUTOCAST.get(self.precision), enabled=mixed):
            output = self.model(*inputs)
        outputs = output if isinstance(output, tuple | list) else (output,)
        loss = sum(o.float().pow(2).mean() for o in outputs if torch.is_tensor(o) and o.is_floating_point())
        loss.backward()

    def update(self) -> None:
        self.optimizer.step()

    def clear(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)


def model_and_inputs(name: str, seq_len: int | None, seed: int, device: torch.device, sizes, rank: int = 0):
    """The model in fp32 on ``device`` (weights from ``seed``), and one input per micro-batch size."""
    built = build_model(name, seq_len, seed)
    model = built.model.to(device).train()
    torch.manual_seed(seed + 1000 + rank)  # inputs differ per rank, as data-parallel shards do
    inputs = {}
    for b in sizes:
        made = built.make_input(b)
        inputs[b] = tuple(t.to(device) for t in (made if isinstance(made, tuple) else (made,)))
    return built, model, inputs


def calibrate_training(req: TrainCalibrationRequest) -> dict:
    """Measure steps and all-reduces; return a ``capsim.profile/3`` document with a ``training`` section."""
    started = time.perf_counter()
    device = resolve_device(req.device)
    if req.device == "cpu" and req.precision != "fp32":
        raise CalibrationError(f"--precision = {req.precision!r}: on cpu only fp32 is calibrated")
    measured = run_ranks(_steps_worker, 1, req.device, req.threads, req)
    allreduce = None
    if req.world_size >= 2:
        message_sizes = tuple(sorted({*ALLREDUCE_SIZES, measured["gradient_bytes"] // 4 * 4}))
        times = run_ranks(_allreduce_worker, req.world_size, req.device, req.threads, message_sizes,
                          req.allreduce_samples)
        allreduce = {"backend": BACKENDS[req.device], "device": req.device, "world_size": req.world_size,
                     "sizes": [{"message_bytes": int(s), "time_s": [round_sig(t) for t in ts]}
                               for s, ts in zip(message_sizes, times, strict=True)]}
    parameters, probe = measured["parameters"], MemoryProbe(device)
    env = {**environment(device), "cpu_threads": req.threads or torch.get_num_threads()}
    return {
        "schema": SCHEMA_V3, "kind": "measured",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": env,
        "model": {"name": measured["name"], "dtype": "fp32", "compiled": False, "parameters": parameters,
                  "weight_bytes": parameters * 4, "seq_len": measured["seq_len"]},
        "memory": {"device_total_bytes": probe.total_bytes(), "method": probe.method, "fit_method": "none"},
        "training": {"precision": req.precision, "optimizer": req.optimizer,
                     "gradient_bytes": measured["gradient_bytes"], "steps": measured["steps"], "allreduce": allreduce,
                     "method": "steps in a fresh process of a one-rank torch.distributed group (as a data-parallel "
                               "rank runs them); forward_backward_s: one micro-batch forward and backward, "
                               "synchronised, gradients cleared untimed before; optimizer_s: the optimiser step "
                               "after it; all-reduce: float32 buffer, after a barrier, timed on rank 0"},
        "calibration": {"samples": req.samples, "warmup": req.warmup, "seed": req.seed,
                        "allreduce_samples": req.allreduce_samples, "threads": req.threads,
                        "wall_s": round(time.perf_counter() - started, 2), "command": req.command},
    }


def _steps_worker(rank: int, world_size: int, device: torch.device, req: TrainCalibrationRequest) -> dict:
    """One rank's steps at every micro-batch size (in a fresh process: a long-lived one gets faster as its
    allocator settles, and a rank's process also runs the distributed backend's threads)."""
    sizes = tuple(sorted(set(req.micro_batches)))
    built, model, inputs = model_and_inputs(req.model, req.seq_len, req.seed, device, sizes)
    step = TrainStep(model, req.optimizer, req.precision, device)
    probe = MemoryProbe(device)
    with tqdm(total=len(sizes) * (req.warmup + req.samples), disable=not req.progress, unit="step",
              desc="calibrate train", dynamic_ncols=True) as bar:
        steps = [_measure_size(step, inputs[b], b, req, probe, bar) for b in sizes]
    return {"name": built.name, "seq_len": built.seq_len, "parameters": sum(p.numel() for p in model.parameters()),
            "gradient_bytes": sum(p.numel() * 4 for p in model.parameters() if p.requires_grad), "steps": steps}


def _measure_size(step: TrainStep, inputs, b: int, req: TrainCalibrationRequest, probe: MemoryProbe, bar) -> dict:
    probe.reset()
    fb, opt = [], []
    try:
        for i in range(req.warmup + req.samples):
            step.clear()
            synchronize(step.device)
            t0 = time.perf_counter()
            step.forward_backward(inputs)
            synchronize(step.device)
            t1 = time.perf_counter()
            step.update()
            synchronize(step.device)
            t2 = time.perf_counter()
            if i >= req.warmup:
                fb.append(t1 - t0)
                opt.append(t2 - t1)
            bar.update()
    except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
        raise CalibrationError(f"--model = {req.model!r}: the training step failed at micro-batch {b}: "
                               f"{described(exc)}") from None
    return {"micro_batch": b, "forward_backward_s": [round_sig(x) for x in fb],
            "optimizer_s": [round_sig(x) for x in opt], "peak_memory_bytes": probe.peak_bytes()}


def _allreduce_worker(rank: int, world_size: int, device: torch.device, sizes, samples: int) -> list[list[float]]:
    out = []
    for size in sizes:
        buffer = torch.ones(size // 4, dtype=torch.float32, device=device)
        times = []
        for i in range(ALLREDUCE_WARMUP + samples):
            dist.barrier()
            synchronize(device)
            t0 = time.perf_counter()
            dist.all_reduce(buffer)
            synchronize(device)
            if i >= ALLREDUCE_WARMUP:
                times.append(time.perf_counter() - t0)
        out.append(times)
    return out
