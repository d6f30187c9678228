"""The CPU LLM validation suite's recipe: which real LLM server runs the token-level simulator is judged against.

One LLM iteration profile is calibrated for the built-in decoder with one torch thread (as the server runs
it: ``capsim calibrate --mode llm``); per scheduler setting a short **pilot** serves a burst of requests
(all due at once) and its middle completions measure the rate the server sustains; then per setting and
load one ``capsim bench-serve --llm`` run at that share of the pilot's rate. ``record_llm_suite`` does
all of it into one folder; the live suite (``tests/test_validate_llm_cpu.py``, ``make validate``) and
the committed recording (``scripts/record_validation_llm_cpu.py`` -> ``tests/data/recordings/llm-cpu/``)
both come from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from calibration.validation_suite import capsim

MODEL = "decoder"
THREADS = 1
INPUT_TOKENS = "{distribution: lognormal, mean_tokens: 48, cv: 0.6, max_tokens: 256}"
OUTPUT_TOKENS = "{distribution: lognormal, mean_tokens: 24, cv: 0.6, max_tokens: 96}"
MAX_MODEL_LEN = 384
# (name, flags): chunked prefill with a small token budget and a KV cache tight enough to preempt at the
# top load; and vLLM V0's prefill-or-decode iterations with fewer sequences.
SETTINGS = (
    ("chunked-s16-t64", ("--max-num-seqs", "16", "--max-num-batched-tokens", "64", "--kv-blocks", "96")),
    ("whole-s8-t384", ("--max-num-seqs", "8", "--max-num-batched-tokens", "384", "--no-chunked-prefill",
                       "--kv-blocks", "256")),
)
LOADS = (0.3, 0.6, 0.85)
MIN_REQUESTS, MIN_DURATION_S = 100, 8.0
PILOT_REQUESTS = 120
PROFILE_NAME = "profile-cpu-decoder-llm-1t.json"
CALIBRATION = ("--prefill-tokens", "0,16,64,192", "--decode-seqs", "0,1,2,4,8,16,24", "--context-tokens",
               "32,128,320", "--samples", "6", "--warmup", "2")


@dataclass(frozen=True)
class RecordedLlmSuite:
    """What ``record_llm_suite`` wrote: the calibrated profile, the run folders in order, the command
    lines, and per setting the pilot's sustained rate."""

    profile: Path
    run_dirs: list[Path]
    commands: list[list[str]]
    pilot_rps: dict[str, float]


def common_flags() -> list[str]:
    return ["--llm", "--model", MODEL, "--threads", str(THREADS), "--max-model-len", str(MAX_MODEL_LEN),
            "--input-tokens", INPUT_TOKENS, "--output-tokens", OUTPUT_TOKENS]


def sustained_rps(run_dir: Path) -> float:
    """Requests/s a saturated server completed: the middle 60% of completions over the time they took
    (the first are the ramp-up of an empty server, the last the drain of its final batch)."""
    requests = pd.read_parquet(run_dir / "requests.parquet")
    ends = np.sort(requests.loc[requests["outcome"] == "served", "end_s"].to_numpy())
    lo, hi = int(0.2 * len(ends)), int(0.8 * len(ends))
    return (hi - lo) / float(ends[hi] - ends[lo])


def run_name(setting: str, load: float) -> str:
    return f"{setting}-load{round(load * 100)}"


def record_llm_suite(work: Path) -> RecordedLlmSuite:
    """Calibrate, pilot and run the whole suite into ``work``; pilots go to ``work/pilot-<setting>``."""
    commands: list[list[str]] = []

    def run(*args: str) -> str:
        commands.append(["capsim", *args])
        return capsim(*args)

    work.mkdir(parents=True, exist_ok=True)
    profile = work / PROFILE_NAME
    run("calibrate", "--mode", "llm", "--model", MODEL, "--threads", str(THREADS), *CALIBRATION, "--no-progress",
        "--out", str(profile))
    runs, pilots = [], {}
    for name, flags in SETTINGS:
        pilot = work / f"pilot-{name}"
        # A burst: every request due in the first 10 ms, so the server is saturated from the start.
        run("bench-serve", *common_flags(), *flags, "--rate", str(PILOT_REQUESTS * 100), "--duration", "0.01",
            "--seed", "2", "--out", str(pilot))
        pilots[name] = sustained_rps(pilot)
        for load in LOADS:
            rate = round(load * pilots[name], 2)
            duration = max(MIN_DURATION_S, MIN_REQUESTS / rate)
            target = work / run_name(name, load)
            run("bench-serve", *common_flags(), *flags, "--rate", str(rate), "--duration", f"{duration:.2f}",
                "--seed", "1", "--out", str(target))
            settings = json.loads((target / "run.json").read_text())
            settings["pilot_rps"] = round(pilots[name], 3)  # what the load was set from
            (target / "run.json").write_text(json.dumps(settings, indent=2) + "\n")
            runs.append(target)
    return RecordedLlmSuite(profile, runs, commands, pilots)
