"""Training predictions against real data-parallel runs (docs/validation.md, "Training").

A recording (``scripts/record_training_validation.py``; committed in ``tests/data/recordings/training/``)
holds a training profile of the model (``capsim calibrate --mode train``: one process's steps, the
all-reduce on ``world_size`` processes) and the step times of real PyTorch DDP runs at several process
counts (``calibration/ddp_run.py``). :func:`compare` predicts each run from the profile alone, through
the same plan, layout and step model ``capsim train-plan`` uses, and puts the two side by side. Nothing
here runs torch: the figures of a recording are the same on any machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import CapsimError
from sim.training.layout import MIB, Layout
from sim.training.scenario import training_plan_from_dict
from sim.training.setup import build_setup
from sim.training.step import StepTime, step_time

TOLERANCE = 0.10  # |predicted / measured median step time - 1| at every process count


@dataclass(frozen=True)
class RunSpec:
    """A real run as the recording describes it (``calibration.ddp_run.DdpRunSpec``'s fields)."""

    model: str
    world_size: int
    micro_batch: int
    accumulation: int = 1
    optimizer: str = "adam"
    precision: str = "fp32"
    bucket_mb: float = 25.0


def predict(profile_path: str | Path, run: RunSpec) -> StepTime:
    """The step time ``capsim train-plan`` predicts for the run, from the profile only."""
    global_batch = run.world_size * run.micro_batch * run.accumulation
    plan = training_plan_from_dict({
        "kind": "training", "name": f"{run.model} on {run.world_size}", "model": {"name": run.model},
        "data": {"samples": global_batch}, "batch": {"global_batch": global_batch, "micro_batch": run.micro_batch},
        "precision": run.precision, "optimizer": run.optimizer,
        "cluster": {"gpu": "profile", "gpus": run.world_size, "usd_per_gpu_hour": 0.0},
        "parallel": {"bucket_mb": run.bucket_mb}, "compute": {"profile": str(Path(profile_path).resolve())},
        "reliability": {"gpu_mtbf_hours": None}}, source="validation run")
    setup = build_setup(plan)
    layout = Layout(gpus=run.world_size, micro_batch=run.micro_batch, global_batch=global_batch,
                    bucket_bytes=run.bucket_mb * MIB)
    return step_time(setup, layout)


def load_recording(folder: str | Path) -> tuple[Path, list[dict], dict]:
    """``(profile path, runs, recording facts)`` of a recording folder."""
    folder = Path(folder)
    try:
        facts = json.loads((folder / "recording.json").read_text())
        runs = json.loads((folder / "runs.json").read_text())["runs"]
    except (OSError, ValueError, KeyError) as exc:
        raise CapsimError(f"{folder}: not a training recording ({type(exc).__name__}: {exc})") from None
    return folder / facts["profile"], runs, facts


def compare(profile_path: str | Path, runs: list[dict]) -> pd.DataFrame:
    """One row per run: measured and predicted step time and throughput, the error, the parts."""
    rows = []
    for run in runs:
        spec = RunSpec(**run["spec"])
        step = predict(profile_path, spec)
        measured = float(np.median(run["step_s"]))
        batch = spec.world_size * spec.micro_batch * spec.accumulation
        rows.append({
            "processes": spec.world_size, "micro_batch": spec.micro_batch, "accumulation": spec.accumulation,
            "measured_step_s": measured, "predicted_step_s": step.total_s,
            "error": step.total_s / measured - 1,
            "measured_samples_per_s": batch / measured, "predicted_samples_per_s": batch / step.total_s,
            "measured_p10_s": float(np.quantile(run["step_s"], 0.1)),
            "measured_p90_s": float(np.quantile(run["step_s"], 0.9)),
            "compute_s": step.compute_s, "sync_s": step.sync_s, "sync_exposed_s": step.sync_exposed_s,
            "optimizer_s": step.optimizer_s, "steps_timed": len(run["step_s"])})
    return pd.DataFrame(rows)
