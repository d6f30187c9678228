"""How ``capsim validate --calibrate`` calibrates for ``capsim bench-serve --llm`` runs (the work:
sim/validation/llm.py; the report and the profiles' loop: sim/cli/validate.py).

The same flags as for request-level runs: ``--profile FILE`` (an LLM iteration profile), ``--calibrate``
(``capsim calibrate --mode llm`` in a child process, the runs' model, threads and seed) or
``--from-run replay|self|others``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sim.errors import CapsimError
from sim.serving.waiting import recorded_wait


def calibration_key(run) -> tuple:
    s = run.settings
    return s["model"], s["threads"], s.get("seed", 0), s["llm"]["block_size"], recorded_wait(s)


def calibrate_for(runs: list, out: Path) -> Path:
    """``capsim calibrate --mode llm`` in a fresh process with the runs' model, threads, seed, block size and
    way of waiting (runs of one :func:`calibration_key`)."""
    s = runs[0].settings
    target = out / f"profile-llm-{s['model']}-{s['threads']}t.json"
    cmd = [sys.executable, "-m", "sim.cli", "calibrate", "--mode", "llm", "--model", s["model"], "--threads",
           str(s["threads"]), "--seed", str(s.get("seed", 0)), "--block-size", str(s["llm"]["block_size"]),
           "--wait", recorded_wait(s), "--no-progress", "--out", str(target)]
    print("calibrating:", " ".join(cmd[3:]), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CapsimError(f"--calibrate: capsim calibrate failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return target
