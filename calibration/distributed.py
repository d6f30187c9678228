"""Starting ``world_size`` torch.distributed processes on this machine, and what they share.

One place starts ranks for both the all-reduce calibration (``calibration/training.py``) and the real
data-parallel runs (``calibration/ddp_run.py``): fresh interpreters (``spawn``), rank ``r`` of
``world_size`` joined through a TCP store on a free local port, gloo on CPU and NCCL on GPUs (one GPU per
rank), ``threads`` torch threads each. Rank 0's return value comes back; any rank's failure becomes one
:class:`CalibrationError` line naming the rank.
"""

from __future__ import annotations

import datetime
import os
import socket
import traceback
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from calibration.errors import CalibrationError
from calibration.models import described

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}
JOIN_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(work: Callable, world_size: int, device: str, threads: int | None, *args):
    """``work(rank, world_size, device, *args)`` in ``world_size`` processes; rank 0's result."""
    if device == "cuda" and world_size > torch.cuda.device_count():
        raise CalibrationError(f"--world-size = {world_size}: {torch.cuda.device_count()} CUDA GPU(s) visible; NCCL "
                               "runs one rank per GPU")
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    port = free_port()
    mp.start_processes(_rank_main, args=(world_size, device, threads, port, results, work, args), nprocs=world_size,
                       start_method="spawn", join=True)
    answers = {}
    while not results.empty():
        rank, ok, value = results.get()
        answers[rank] = (ok, value)
    for rank, (ok, value) in sorted(answers.items()):
        if not ok:
            raise CalibrationError(value if world_size == 1 else f"rank {rank} of {world_size} failed: {value}")
    if 0 not in answers:
        raise CalibrationError(f"rank 0 of {world_size} returned nothing")
    return answers[0][1]


def _rank_main(rank: int, world_size: int, device: str, threads: int | None, port: int, results, work, args) -> None:
    try:
        if threads:
            torch.set_num_threads(threads)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        if device == "cuda":
            torch.cuda.set_device(rank)
        dist.init_process_group(BACKENDS[device], rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=JOIN_TIMEOUT_S))
        try:
            value = work(rank, world_size, torch.device(device, rank) if device == "cuda" else torch.device(device),
                         *args)
            dist.barrier()  # rank 0 hosts the store: leaving before the others are done aborts them (gloo)
        finally:
            dist.destroy_process_group()
        results.put((rank, True, value if rank == 0 else None))
    except CalibrationError as exc:  # already one line for people (the model's own failure, say)
        results.put((rank, False, str(exc)))
    except Exception as exc:  # noqa: BLE001 - a rank's failure is reported by the parent, in one line
        where = traceback.extract_tb(exc.__traceback__)[-1]
        results.put((rank, False, f"{described(exc)} (at {os.path.basename(where.filename)}:{where.lineno})"))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
