"""The serving validation suites' recipes: which real server runs the simulator is judged against.

One profile is calibrated for the suite's model (on CPU with one torch thread, as the server runs it);
per batching setting a short pilot run measures the capacity the server has under traffic, and the
loads are set from it; then per setting and load one ``capsim bench-serve`` run (on CPU the top load
twice, with the same arrivals). ``record_suite`` does all of it into one folder; the live suite
(``tests/test_validate_cpu.py``, ``make validate``) and the committed recordings
(``scripts/record_validation_cpu.py`` -> ``tests/data/recordings/cpu/``, ``cpu-poll/``;
``scripts/record_validation_gpu.py`` -> ``tests/data/recordings/gpu-*``) all come from it.

``wait`` is how the server waits for work (``bench-serve --wait``, sim/serving/waiting.py), and the
calibration measures its idle response the same way (``calibrate --wait``). A suite of a server that
does not block calibrates under ``block`` as well, just before: the profile capsim would have used
without ``--wait``, to compare against.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MODEL = "calibration.validation_model:wide_mlp"
THREADS = 1
SETTINGS = ((1, 0.0), (8, 2.0), (32, 5.0))  # (max batch size, max queue delay ms)
LOADS = (0.3, 0.6, 0.85)
MIN_REQUESTS, MIN_DURATION_S = 2000, 6.0
PILOT_S = 3.0
PROFILE_NAME = "profile-cpu-1t.json"

TWICE_BATCH_1 = -1.0  # a setting's delay given as this: twice the calibrated batch-1 time (the H100 set's T)


@dataclass(frozen=True)
class Recipe:
    """What one suite serves and how: the model and where it runs, the batching settings (a delay of
    ``TWICE_BATCH_1`` is twice the calibrated batch-1 time), the loads as shares of the pilot's capacity,
    and how long each run lasts (``min_requests`` arrivals, at least ``min_duration_s``, at most
    ``max_duration_s``)."""

    model: str = MODEL
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int | None = THREADS
    settings: tuple[tuple[int, float], ...] = SETTINGS
    loads: tuple[float, ...] = LOADS
    min_requests: int = MIN_REQUESTS
    min_duration_s: float = MIN_DURATION_S
    max_duration_s: float = float("inf")
    pilot_s: float = PILOT_S
    profile_name: str = PROFILE_NAME
    measure_load: bool = False  # calibrate checkpoint read, runtime start and load rate too
    calibrate_samples: int = 60

    def device_args(self) -> list[str]:
        threads = ["--threads", str(self.threads)] if self.threads is not None else []
        return ["--model", self.model, "--device", self.device, "--dtype", self.dtype, *threads]

    def duration_s(self, rate: float) -> float:
        return min(self.max_duration_s, max(self.min_duration_s, self.min_requests / rate))


CPU_RECIPE = Recipe()


def gpu_recipe(model: str, dtype: str, device: str = "cuda") -> Recipe:
    """The GPU suite for one model: the H100 development set's grid (B 1, 8, 32; T 0 at 1 and 8, twice
    the batch-1 time at 32), every run 6-8 s (a GPU serves thousands of requests a second at batch 32).
    ``device`` other than cuda is for trying the recipe out without a GPU."""
    return Recipe(model=model, device=device, dtype=dtype, threads=None,
                  settings=((1, 0.0), (8, 0.0), (32, TWICE_BATCH_1)), min_requests=4000, min_duration_s=6.0,
                  max_duration_s=8.0, pilot_s=2.0, profile_name=f"profile-{device}-{model}-{dtype}.json",
                  measure_load=True)


def profile_name(wait: str, recipe: Recipe = CPU_RECIPE) -> str:
    """The suite's calibrated profile of a server that waits for work as ``wait``."""
    name = recipe.profile_name
    return name if wait == "block" else name.replace(".json", f"-{wait}.json")


@dataclass(frozen=True)
class RecordedSuite:
    """What ``record_suite`` wrote: the calibrated profile, the run folders in order, the command lines."""

    profile: Path
    run_dirs: list[Path]
    commands: list[list[str]]
    wait: str = "block"
    profiles: dict[str, Path] = field(default_factory=dict)  # per waiting behaviour calibrated under
    pilots: list[Path] = field(default_factory=list)  # the pilots' from-run profiles


def capsim(*args: str) -> str:
    """Run one ``capsim`` command in a fresh interpreter; its stdout, or an error carrying its stderr."""
    done = subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"capsim {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def run_name(max_batch: int, delay_ms: float, load: float) -> str:
    return f"b{max_batch}-d{delay_ms:g}ms-load{round(load * 100)}"


def record_suite(work: Path, wait: str = "block", repeat: bool = True, recipe: Recipe = CPU_RECIPE,
                 done: Callable[[Path], None] | None = None) -> RecordedSuite:
    """Calibrate, pilot and run the whole suite into ``work`` with a server that waits as ``wait``; pilots go
    to ``work/pilot-b<B>``; without ``repeat`` the top load runs once. ``done`` is called with each file or
    folder as soon as it is complete (a recorder that may be stopped keeps what finished)."""
    from sim.profiles.profile import load_profile
    from sim.validation.validate import capacity_rps

    commands: list[list[str]] = []
    finished = done or (lambda path: None)

    def run(*args: str) -> str:
        commands.append(["capsim", *args])
        return capsim(*args)

    work.mkdir(parents=True, exist_ok=True)
    top = max(b for b, _ in recipe.settings)
    profiles = {w: work / profile_name(w, recipe) for w in dict.fromkeys((wait, "block"))}
    for w, path in profiles.items():
        run("calibrate", *recipe.device_args(), "--batch-sizes", ",".join(map(str, range(1, top + 1))),
            "--samples", str(recipe.calibrate_samples), "--warmup", "5", "--replay-batches", "40", "--wait", w,
            *([] if recipe.measure_load else ["--skip-load"]), *(["--runtime-start-runs", "1"]
                                                                 if recipe.measure_load else []),
            "--no-progress", "--out", str(path))
        finished(path)
    profile = profiles[wait]
    prof = load_profile(profile)
    runs, pilots = [], []
    for max_batch, delay_ms in recipe.settings:
        if delay_ms == TWICE_BATCH_1:
            delay_ms = round(2e3 * prof.mean_service_s(1), 2)
        # The server under traffic is not as fast as the back-to-back benchmark (idle gaps, a busy load
        # generator on the other core): a short pilot at half the benchmark's capacity measures the
        # capacity the loads are set from, so "85%" is 85% of what this server serves now.
        pilot = work / f"pilot-b{max_batch}"
        run("bench-serve", *recipe.device_args(), "--max-batch-size", str(max_batch),
            "--max-queue-delay-ms", str(delay_ms), "--rate", str(round(0.5 * capacity_rps(prof, max_batch, 1), 1)),
            "--duration", str(recipe.pilot_s), "--seed", "2", "--wait", wait, "--out", str(pilot))
        run("profile", "from-run", str(pilot), "--out", str(work / f"pilot-b{max_batch}.json"))
        pilots.append(work / f"pilot-b{max_batch}.json")
        finished(pilots[-1])
        capacity = capacity_rps(load_profile(work / f"pilot-b{max_batch}.json"), max_batch, 1)
        for load in recipe.loads:
            rate = round(load * capacity, 1)
            name = run_name(max_batch, delay_ms, load)
            # The top load runs twice with the same arrivals: how far the real server repeats itself.
            for suffix in ("", "-repeat") if repeat and load == max(recipe.loads) else ("",):
                run("bench-serve", *recipe.device_args(), "--max-batch-size", str(max_batch),
                    "--max-queue-delay-ms", str(delay_ms), "--rate", str(rate), "--duration",
                    f"{recipe.duration_s(rate):.2f}", "--seed", "1", "--wait", wait,
                    "--out", str(work / (name + suffix)))
                runs.append(work / (name + suffix))
                finished(runs[-1])
    return RecordedSuite(profile, runs, commands, wait, profiles, pilots)
