"""The CPU validation suite's recipe: which real server runs the simulator is judged against.

One profile is calibrated for the validation model with one torch thread (as the server runs it); per
batching setting a short pilot run measures the capacity the server has under traffic, and the loads
are set from it; then per setting and load one ``capsim bench-serve`` run (the top load twice, with
the same arrivals). ``record_suite`` does all of it into one folder; the live suite
(``tests/test_validate_cpu.py``, ``make validate``) and the committed recordings
(``scripts/record_validation_cpu.py`` -> ``tests/data/recordings/cpu/``, ``cpu-poll/``) both come from it.

``wait`` is how the server waits for work (``bench-serve --wait``, sim/serving/waiting.py), and the
calibration measures its idle response the same way (``calibrate --wait``). A suite of a server that
does not block calibrates under ``block`` as well, just before: the profile capsim would have used
without ``--wait``, to compare against.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

MODEL = "calibration.validation_model:wide_mlp"
THREADS = 1
SETTINGS = ((1, 0.0), (8, 2.0), (32, 5.0))  # (max batch size, max queue delay ms)
LOADS = (0.3, 0.6, 0.85)
MIN_REQUESTS, MIN_DURATION_S = 2000, 6.0
PILOT_S = 3.0
PROFILE_NAME = "profile-cpu-1t.json"


def profile_name(wait: str) -> str:
    """The suite's calibrated profile of a server that waits for work as ``wait``."""
    return PROFILE_NAME if wait == "block" else PROFILE_NAME.replace(".json", f"-{wait}.json")


@dataclass(frozen=True)
class RecordedSuite:
    """What ``record_suite`` wrote: the calibrated profile, the run folders in order, the command lines."""

    profile: Path
    run_dirs: list[Path]
    commands: list[list[str]]
    wait: str = "block"
    profiles: dict[str, Path] = field(default_factory=dict)  # per waiting behaviour calibrated under


def capsim(*args: str) -> str:
    """Run one ``capsim`` command in a fresh interpreter; its stdout, or an error carrying its stderr."""
    done = subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"capsim {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def run_name(max_batch: int, delay_ms: float, load: float) -> str:
    return f"b{max_batch}-d{delay_ms:g}ms-load{round(load * 100)}"


def record_suite(work: Path, wait: str = "block", repeat: bool = True) -> RecordedSuite:
    """Calibrate, pilot and run the whole suite into ``work`` with a server that waits as ``wait``; pilots go
    to ``work/pilot-b<B>``; without ``repeat`` the top load runs once."""
    from sim.profiles.profile import load_profile
    from sim.validation.validate import capacity_rps

    commands: list[list[str]] = []

    def run(*args: str) -> str:
        commands.append(["capsim", *args])
        return capsim(*args)

    work.mkdir(parents=True, exist_ok=True)
    top = max(b for b, _ in SETTINGS)
    profiles = {w: work / profile_name(w) for w in dict.fromkeys((wait, "block"))}
    for w, path in profiles.items():
        run("calibrate", "--model", MODEL, "--threads", str(THREADS), "--batch-sizes",
            ",".join(map(str, range(1, top + 1))), "--samples", "60", "--warmup", "5", "--replay-batches", "40",
            "--wait", w, "--skip-load", "--no-progress", "--out", str(path))
    profile = profiles[wait]
    prof = load_profile(profile)
    runs = []
    for max_batch, delay_ms in SETTINGS:
        # The server under traffic is not as fast as the back-to-back benchmark (idle gaps, a busy load
        # generator on the other core): a short pilot at half the benchmark's capacity measures the
        # capacity the loads are set from, so "85%" is 85% of what this server serves now.
        pilot = work / f"pilot-b{max_batch}"
        run("bench-serve", "--model", MODEL, "--threads", str(THREADS), "--max-batch-size", str(max_batch),
            "--max-queue-delay-ms", str(delay_ms), "--rate", str(round(0.5 * capacity_rps(prof, max_batch, 1), 1)),
            "--duration", str(PILOT_S), "--seed", "2", "--wait", wait, "--out", str(pilot))
        run("profile", "from-run", str(pilot), "--out", str(work / f"pilot-b{max_batch}.json"))
        capacity = capacity_rps(load_profile(work / f"pilot-b{max_batch}.json"), max_batch, 1)
        for load in LOADS:
            rate = round(load * capacity, 1)
            duration = max(MIN_DURATION_S, MIN_REQUESTS / rate)
            name = run_name(max_batch, delay_ms, load)
            # The top load runs twice with the same arrivals: how far the real server repeats itself.
            for suffix in ("", "-repeat") if repeat and load == max(LOADS) else ("",):
                run("bench-serve", "--model", MODEL, "--threads", str(THREADS), "--max-batch-size",
                    str(max_batch), "--max-queue-delay-ms", str(delay_ms), "--rate", str(rate), "--duration",
                    f"{duration:.2f}", "--seed", "1", "--wait", wait, "--out", str(work / (name + suffix)))
                runs.append(work / (name + suffix))
    return RecordedSuite(profile, runs, commands, wait, profiles)
