"""``capsim validate`` of ``capsim bench-serve --llm`` runs (the work: sim/validation/llm.py).

The same flags as for request-level runs: ``--profile FILE`` (an LLM iteration profile), ``--calibrate``
(``capsim calibrate --mode llm`` in a child process, the runs' model, threads and seed) or
``--from-run replay|self|others``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sim.errors import CapsimError


def main(args, runs: list, given: Path | None, out: Path) -> int:
    from rich.console import Console

    from sim.results.files import writing_folder
    from sim.validation import llm as v

    console = Console()
    with writing_folder(out, force=args.force) as work:
        records = [v.validate_run(run, profile, work, args.replications, args.seed, plot=not args.no_plot)
                   for run, profile in zip(runs, _profiles(args, runs, given, work))]
        console.print(v.error_table(records, console.width))
        v.write_report(records, work)
    summary = v.overall(records)
    console.print(f"runs within tolerance (TTFT and TPOT p50 ±{v.TOLERANCES['ttft_p50_s']:.0%}, p99 "
                  f"±{v.TOLERANCES['ttft_p99_s']:.0%}, load ≤ {v.MAX_LOAD:.0%}): "
                  f"{summary['runs_within_tolerance']} of {summary['runs_judged']}")
    if summary["runs_disturbed"]:
        console.print(f"[yellow]{summary['runs_disturbed']} run(s) disturbed by the machine[/] (late load generator "
                      "or late iteration starts; see `disturbed` in validation.json): their errors measure the "
                      "machine, not the simulator")
    console.print(f"wrote {out / 'validation.json'}")
    return 0


def _profiles(args, runs, given: Path | None, work: Path):
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
