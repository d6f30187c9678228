"""Record the CPU validation suite's real server runs once, for the test suite to validate deterministically.

Runs the suite's recipe (``calibration/validation_suite.py``: a 1-thread calibration, three pilots,
twelve ``capsim bench-serve`` runs) on this machine and keeps what ``capsim validate`` reads: per run
``requests.parquet``, ``batches.parquet``, ``loadgen.parquet`` and ``run.json``, the calibrated profile(s),
the pilots' profiles, and ``recording.json`` (when, on what machine, the 1-minute load average before
and after, the machine-load probe before, every command line). Record on a quiet machine; the load
averages say how quiet it was.

``--wait poll`` records a server that polls for work (``bench-serve --wait poll``), calibrated with
``--wait poll`` and, for comparison, ``--wait block``; ``--no-repeat`` runs the top load once.

    .venv/bin/python scripts/record_validation_cpu.py [--wait block|poll] [--no-repeat] [--out DIR] [--done-flag FILE]
    .venv/bin/python scripts/record_validation_cpu.py --wait poll --no-repeat     # -> tests/data/recordings/cpu-poll
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calibration.validation_suite import RecordedSuite, record_suite  # noqa: E402

PARQUET_FILES = ("requests.parquet", "batches.parquet", "loadgen.parquet")


def recording_facts(started: float, before: float, after: float, probe, probe_after=None) -> dict:
    """What every recording.json says of when and where it was made: start, wall time, machine, commit,
    the 1-minute load average before and after, and the machine-load probe (before; after when given)."""
    def described(p) -> dict:
        return {"quiet": p.quiet(), "described": p.describe(), "cpu_share": [round(x, 3) for x in p.cpu_share]}

    facts = {
        "recorded_at": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.time() - started, 1),
        "machine": machine_facts(),
        "git_commit": git_commit(),
        "load_average_1min": {"before": round(before, 2), "after": round(after, 2),
                              "note": "before: the machine before the recording; after: including the "
                                      "recording's own server and load generator"},
        "machine_load_before": described(probe),
    }
    return facts | ({"machine_load_after": described(probe_after)} if probe_after is not None else {})


def machine_facts() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    gpu = {"gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda} if torch.cuda.is_available() else {}
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, **gpu}


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def write_compact(src: Path, dst: Path) -> None:
    """Copy one parquet file losslessly at about half the size: zstd, float columns byte-stream split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    pq.write_table(table, dst, compression="zstd", compression_level=19, use_byte_stream_split=floats,
                   use_dictionary=[f.name for f in table.schema if f.name not in floats])


def keep_one(path: Path, out: Path) -> None:
    """Copy one finished part of a suite into ``out``: a profile as it is, a run folder as the files
    validation reads (``run.json`` and the parquet files, re-encoded compactly)."""
    out.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        shutil.copy(path, out / path.name)
        return
    (out / path.name).mkdir(exist_ok=True)
    shutil.copy(path / "run.json", out / path.name / "run.json")
    for name in PARQUET_FILES:
        write_compact(path / name, out / path.name / name)


def keep(out: Path, suite: RecordedSuite) -> None:
    """Copy the files validation reads of ``suite`` into ``out`` (replacing what was there)."""
    if out.exists():
        shutil.rmtree(out)
    for path in [*suite.profiles.values(), *suite.pilots, *suite.run_dirs]:
        keep_one(path, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", default="block", choices=("block", "poll"), help="how the server waits for work")
    parser.add_argument("--no-repeat", action="store_true", help="run the top load once (no repeat run)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: tests/data/recordings/cpu (block) or cpu-<wait>")
    parser.add_argument("--done-flag", type=Path, default=None, help="an empty file to create when done")
    args = parser.parse_args()
    out = args.out or ROOT / "tests/data/recordings" / ("cpu" if args.wait == "block" else f"cpu-{args.wait}")
    from calibration.machine_load import measure

    probe = measure()
    before = os.getloadavg()[0]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="capsim-recording-") as tmp:
        suite = record_suite(Path(tmp), wait=args.wait, repeat=not args.no_repeat)
        after = os.getloadavg()[0]
        keep(out, suite)
        commands = [[part.replace(tmp, "RUN_DIR_PARENT") for part in cmd] for cmd in suite.commands]
    recording = {
        **recording_facts(started, before, after, probe),
        "wait": suite.wait,
        "profile": suite.profile.name,
        "profiles": {wait: path.name for wait, path in suite.profiles.items()},
        "parquet": "as bench-serve wrote it, re-encoded losslessly (zstd, float columns byte-stream split)",
        "runs": [run.name for run in suite.run_dirs],
        "commands": commands,
    }
    (out / "recording.json").write_text(json.dumps(recording, indent=2) + "\n")
    print(f"recorded {len(suite.run_dirs)} runs into {out} in {recording['wall_s']} s; "
          f"1-minute load average {before:.2f} before, {after:.2f} after")
    if args.done_flag:
        args.done_flag.touch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
