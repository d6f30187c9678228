"""Real data-parallel training on this machine against capsim's prediction: record it, or check it live.

In each of four rounds:

1. ``capsim calibrate --mode train`` of the model (one process's forward+backward and optimiser steps at
   the runs' micro-batch sizes; the gloo all-reduce on 2 processes), one torch thread per process;
2. real PyTorch DDP runs (``calibration/ddp_run.py``) on 1 and 2 processes (each 1 thread, gloo) at each
   micro-batch size, in the opposite order every other round.

The profile pools the four calibrations and each run pools its four rounds: this VM's speed drifts by
10-20% within seconds (its host's caches and memory are shared), so both sides sample the same spread of
machine states. Then every run is predicted from the profile alone (``sim/validation/training.py``).

Record on a quiet machine: the machine's load is measured before and after (``calibration/machine_load.py``)
and kept in ``recording.json``; the suite (tests/test_training_validation.py) judges the committed recording.

    .venv/bin/python scripts/record_training_validation.py              # live: measure, predict, print
    .venv/bin/python scripts/record_training_validation.py --record     # ... and write tests/data/recordings/training/
    make validate-training                                               # the live check, after a load probe
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calibration.ddp_run import DdpRunSpec, run_ddp  # noqa: E402
from calibration.machine_load import measure  # noqa: E402
from calibration.training import TrainCalibrationRequest, calibrate_training  # noqa: E402
from sim.profiles.training import write_training_profile  # noqa: E402
from sim.results.files import writing_folder  # noqa: E402
from sim.validation.training import TOLERANCE, compare  # noqa: E402

OUT = ROOT / "tests" / "data" / "recordings" / "training"
MODEL = "mlp"
MICRO_BATCHES = (16, 64)
RUNS = [(n, b, 1) for b in MICRO_BATCHES for n in (1, 2)]  # (processes, micro-batch, accumulation), interleaved
ROUNDS, SAMPLES, STEPS, WARMUP = 4, 25, 30, 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help=f"write the recording to --out (default {OUT})")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--wait-quiet-min", type=float, default=0.0, metavar="MIN",
                        help="first wait up to this many minutes for the machine to be quiet (probed every 20 s)")
    args = parser.parse_args(argv)
    before = measure()
    deadline = time.time() + 60 * args.wait_quiet_min
    while not before.quiet() and time.time() < deadline:
        time.sleep(20)
        before = measure()
    print(f"machine load before: {before.describe()}", flush=True)
    started = time.time()
    request = TrainCalibrationRequest(MODEL, MICRO_BATCHES, samples=SAMPLES, warmup=5, world_size=2, threads=1,
                                      allreduce_samples=10, progress=False,
                                      command=["capsim", "calibrate", "--mode", "train", "--model", MODEL,
                                               "--batch-sizes", ",".join(map(str, MICRO_BATCHES)),
                                               "--world-size", "2", "--threads", "1", "--samples", str(SAMPLES),
                                               "--warmup", "5", "--allreduce-samples", "10"])
    calibrations, steps = [], {run: [] for run in RUNS}
    for r in range(ROUNDS):  # calibration then runs, the run order reversed every other round
        print(f"round {r + 1} of {ROUNDS}: calibration, then DDP runs", flush=True)
        calibrations.append(calibrate_training(request))
        for n, b, a in RUNS if r % 2 == 0 else RUNS[::-1]:
            steps[(n, b, a)] += run_ddp(DdpRunSpec(MODEL, n, b, a, steps=STEPS, warmup=WARMUP, threads=1))
    doc = pooled(calibrations)
    runs = [{"spec": {"model": MODEL, "world_size": n, "micro_batch": b, "accumulation": a, "optimizer": "adam",
                      "precision": "fp32", "bucket_mb": 25.0}, "step_s": [float(f"{t:.5g}") for t in steps[(n, b, a)]]}
            for n, b, a in RUNS]
    after = measure()
    print(f"machine load after: {after.describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        profile = write_training_profile(doc, Path(tmp) / "profile.json")
        table = compare(profile, runs)
        _print(table)
        if args.record:
            _write(Path(args.out), doc, runs, before, after, started)
    bad = table[table["error"].abs() > TOLERANCE]
    return 1 if len(bad) else 0


def pooled(calibrations: list[dict]) -> dict:
    """One profile holding the samples of every calibration (the runs took place between them)."""
    doc = json.loads(json.dumps(calibrations[0]))
    training = doc["training"]
    for later in calibrations[1:]:
        for entry, other in zip(training["steps"], later["training"]["steps"], strict=True):
            for key in ("forward_backward_s", "optimizer_s"):
                entry[key] += other[key]
        for entry, other in zip(training["allreduce"]["sizes"], later["training"]["allreduce"]["sizes"], strict=True):
            entry["time_s"] += other["time_s"]
    training["method"] += f"; {len(calibrations)} calibrations, one before each round of DDP runs, their samples pooled"
    doc["calibration"]["wall_s"] = round(sum(c["calibration"]["wall_s"] for c in calibrations), 2)
    doc["calibration"]["rounds"] = len(calibrations)
    return doc


def _print(table) -> None:
    print(f"{'processes':>9} {'micro×acc':>9} {'measured ms':>11} {'predicted ms':>12} {'error':>7} "
          f"{'measured /s':>11} {'predicted /s':>12}")
    for r in table.itertuples():
        print(f"{r.processes:>9} {r.micro_batch:>5}×{r.accumulation:<3} {r.measured_step_s * 1e3:>11.2f} "
              f"{r.predicted_step_s * 1e3:>12.2f} {r.error:>+7.1%} {r.measured_samples_per_s:>11.0f} "
              f"{r.predicted_samples_per_s:>12.0f}")
    print(f"tolerance: |error| <= {TOLERANCE:.0%} at every process count")


def _write(out: Path, doc: dict, runs: list, before, after, started: float) -> None:
    import torch

    facts = {"recorded_utc": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "profile": "profile-cpu-mlp-train.json", "machine": {"cpu": doc["environment"]["cpu"],
             "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()},
             "load_before": before.describe(), "load_after": after.describe(),
             "quiet_before": before.quiet(), "quiet_after": after.quiet(),
             "load_average_before": before.load_average_1min, "load_average_after": after.load_average_1min,
             "recipe": {"model": MODEL, "micro_batches": list(MICRO_BATCHES), "runs": RUNS, "rounds": ROUNDS,
                        "calibration_samples_per_round": SAMPLES, "steps_per_run_and_round": STEPS, "warmup": WARMUP,
                        "threads_per_process": 1, "backend": "gloo"},
             "script": "scripts/record_training_validation.py --record"}
    with writing_folder(out, force=True) as tmp:
        write_training_profile(doc, tmp / facts["profile"])
        (tmp / "runs.json").write_text(json.dumps({"runs": runs}, indent=1) + "\n")
        (tmp / "recording.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(f"wrote {out}/ (profile, runs.json, recording.json)")


if __name__ == "__main__":
    raise SystemExit(main())
