"""The profiles ``capsim validate`` replays ``capsim bench-serve --llm`` runs with (the work: sim/validation/llm.py;
the report: sim/cli/validate.py).

The same flags as for request-level runs: ``--profile FILE`` (an LLM iteration profile), ``--calibrate``
(``capsim calibrate --mode llm`` in a child process, the runs' model, threads and seed) or
``--from-run replay|self|others``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sim.errors import CapsimError


def profiles(args, runs, given: Path | None, work: Path):
    """The iteration profile to replay each run with, made in ``work`` as it is needed."""
    from sim.validation import llm as v

    calibrated: dict[tuple, Path] = {}
    for run in runs:
        if args.from_run:
            yield v.profile_from_run_for(run, runs, args.from_run, work)
        elif args.calibrate:
            key = calibration_key(run)
            if key not in calibrated:
                calibrated[key] = calibrate_for(run, work)
            yield calibrated[key]
        else:
            yield given


def calibration_key(run) -> tuple:
    s = run.settings
    return s["model"], s["threads"], s.get("seed", 0), s["llm"]["block_size"]


def calibrate_for(run, out: Path) -> Path:
    """``capsim calibrate --mode llm`` in a fresh process with the run's model, threads, seed and block size."""
    s = run.settings
    target = out / f"profile-llm-{s['model']}-{s['threads']}t.json"
    cmd = [sys.executable, "-m", "sim.cli", "calibrate", "--mode", "llm", "--model", s["model"], "--threads",
           str(s["threads"]), "--seed", str(s.get("seed", 0)), "--block-size", str(s["llm"]["block_size"]),
           "--no-progress", "--out", str(target)]
    print("calibrating:", " ".join(cmd[3:]), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CapsimError(f"--calibrate: capsim calibrate failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return target
