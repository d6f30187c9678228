"""Record the CPU LLM validation suite's real server runs once, for the test suite to validate deterministically.

Runs the suite's recipe (``calibration/llm_validation_suite.py``: a 1-thread ``capsim calibrate --mode llm``,
a burst pilot per scheduler setting, six ``capsim bench-serve --llm`` runs) and keeps what ``capsim
validate`` reads: per run ``requests.parquet``, ``batches.parquet`` (iterations), ``loadgen.parquet`` and
``run.json``, the calibrated profile, and ``recording.json`` (when, on what machine, the 1-minute load
average and the machine-load probe before and after, every command line). Record on a quiet machine:
``--wait-quiet MINUTES`` polls the load average, then ``calibration.machine_load``, until it says QUIET
(or gives up).

    .venv/bin/python scripts/record_validation_llm_cpu.py [--wait-quiet 60] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from record_validation_cpu import PARQUET_FILES, recording_facts, write_compact  # noqa: E402

from calibration.llm_validation_suite import RecordedLlmSuite, record_llm_suite  # noqa: E402


def wait_for_quiet(minutes: float):
    """Until QUIET or ``minutes`` have passed: the load average read every 10 s, and the machine-load probe
    (whose spinning adds to the load average itself) only once it is low enough; the last probe."""
    from calibration.machine_load import MIN_IDLE_CORES, measure

    deadline = time.time() + 60 * minutes
    while True:
        if os.getloadavg()[0] <= (os.cpu_count() or 1) - MIN_IDLE_CORES or time.time() > deadline:
            probe = measure()
            print(f"machine load: {'QUIET' if probe.quiet() else 'busy'}: {probe.describe()}", flush=True)
            if probe.quiet() or time.time() > deadline:
                return probe
        time.sleep(random.uniform(8, 12))  # apart from other pollers


def keep(work: Path, out: Path, suite: RecordedLlmSuite) -> None:
    """Copy the files validation reads from ``work`` into ``out`` (replacing what was there)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(suite.profile, out / suite.profile.name)
    for run in suite.run_dirs:
        (out / run.name).mkdir()
        shutil.copy(run / "run.json", out / run.name / "run.json")
        for name in PARQUET_FILES:
            write_compact(run / name, out / run.name / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests/data/recordings/llm-cpu")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="MINUTES",
                        help="poll the machine's load until it is quiet, at most this long (default: do not wait)")
    args = parser.parse_args()
    from calibration.machine_load import measure

    probe = wait_for_quiet(args.wait_quiet) if args.wait_quiet else measure()
    before = os.getloadavg()[0]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="capsim-llm-recording-") as tmp:
        suite = record_llm_suite(Path(tmp))
        after = os.getloadavg()[0]
        probe_after = measure()
        keep(Path(tmp), args.out, suite)
        commands = [[part.replace(tmp, "RUN_DIR_PARENT") for part in cmd] for cmd in suite.commands]
    recording = {
        **recording_facts(started, before, after, probe, probe_after),
        "profile": suite.profile.name,
        "pilot_rps": {k: round(v, 3) for k, v in suite.pilot_rps.items()},
        "parquet": "as bench-serve wrote it, re-encoded losslessly (zstd, float columns byte-stream split)",
        "runs": [run.name for run in suite.run_dirs],
        "commands": commands,
    }
    (args.out / "recording.json").write_text(json.dumps(recording, indent=2) + "\n")
    print(f"recorded {len(suite.run_dirs)} runs into {args.out} in {recording['wall_s']} s; 1-minute load average "
          f"{before:.2f} before, {after:.2f} after; quiet before: {probe.quiet()}, after: {probe_after.quiet()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
