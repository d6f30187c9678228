"""Calibrating for a validation: ``capsim calibrate`` in a child process, with what the runs used.

The simulator never imports torch: ``capsim validate --calibrate`` measures the runs' model (same
device, dtype, threads and seed, every batch size the runs need) in a fresh ``capsim calibrate``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sim.errors import CapsimError
from sim.serving.waiting import recorded_wait


def calibration_key(run) -> tuple:
    """Runs that one calibration serves: the same model, device, dtype, threads, seed and waiting for work."""
    s = run.settings
    return (s["model"], s["device"], s["dtype"], s["threads"], s.get("seed", 0), recorded_wait(s))


def calibration_sizes(runs) -> list[int]:
    """Every size the runs used, 1, each run's max and the powers of two below it."""
    sizes = {1}
    for run in runs:
        top = int(run.settings["batching"]["max_batch_size"])
        sizes |= {int(b) for b in run.batches["size"].unique()} | {top}
        sizes |= {2**k for k in range(top.bit_length()) if 2**k <= top}
    return sorted(sizes)


def calibrate_for(runs, out: Path, samples: int) -> Path:
    """``capsim calibrate`` in a fresh process with the runs' model, device, dtype, thread count and waiting
    for work (their server's ``--wait``: the replay's idle gaps are waited so)."""
    s = runs[0].settings
    wait = recorded_wait(s)
    target = out / f"profile-{s['device']}-{s['threads']}t{'' if wait == 'block' else '-' + wait}.json"
    cmd = [sys.executable, "-m", "sim.cli", "calibrate", "--model", s["model"], "--device", s["device"],
           "--dtype", s["dtype"], "--threads", str(s["threads"]), "--seed", str(s.get("seed", 0)), "--wait", wait,
           "--batch-sizes", ",".join(map(str, calibration_sizes(runs))), "--samples", str(samples),
           "--warmup", "5", "--replay-batches", "20", "--skip-load", "--no-progress", "--out", str(target)]
    print("calibrating:", " ".join(cmd[3:]), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CapsimError(f"--calibrate: capsim calibrate failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return target
