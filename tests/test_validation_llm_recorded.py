"""The token-level simulator against the committed recording of a real CPU LLM server: deterministic.

tests/data/recordings/llm-cpu/ holds one run of the CPU LLM validation suite (``scripts/
record_validation_llm_cpu.py``: the 1-thread ``capsim calibrate --mode llm`` profile and six ``capsim
bench-serve --llm`` runs, two scheduler settings × three loads, with the machine's load in
``recording.json``). ``capsim validate`` replays them four ways with fixed seeds and every assertion of
the suite (tests/llm_validation_checks.py) is made on the result: a simulation of recorded data, so the
figures are the same on any machine. The live run of the same suite is ``make validate``.

Publish the figures (docs/validation/llm-cpu/) with
    CAPSIM_VALIDATION_OUT=docs/validation/llm-cpu .venv/bin/python -m pytest tests/test_validation_llm_recorded.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from llm_validation_checks import (
    LlmFidelityChecks,
    check_run_recorded_every_request,
    publish,
    validate_all_modes,
)

from calibration.llm_validation_suite import PROFILE_NAME
from calibration.machine_load import MIN_IDLE_CORES

pytestmark = pytest.mark.slow  # about 30 s: 6 runs validated four ways, 10 replications each

RECORDING = Path(__file__).parent / "data" / "recordings" / "llm-cpu"
REPLICATIONS = 10
SEED = 0


def recorded_runs() -> list[Path]:
    return [RECORDING / name for name in json.loads((RECORDING / "recording.json").read_text())["runs"]]


@pytest.fixture(scope="module")
def llm_suite(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("validation-llm-recorded")
    target = os.environ.get("CAPSIM_VALIDATION_OUT")
    reports = validate_all_modes(recorded_runs(), RECORDING / PROFILE_NAME, work, REPLICATIONS, SEED,
                                 plot=bool(target))
    if target:
        publish(work, RECORDING / PROFILE_NAME, recorded_runs(), Path(target))
    return reports


class TestCommittedLlmRecording(LlmFidelityChecks):
    """The suite's assertions on the committed recording."""

    @pytest.mark.parametrize("run_dir", recorded_runs(), ids=lambda p: p.name)
    def test_the_recording_holds_every_request(self, run_dir):
        check_run_recorded_every_request(run_dir)

    def test_the_recording_was_made_on_a_quiet_machine(self):
        """Before the recording the 1-minute load average was as low as ``make validate`` requires."""
        recording = json.loads((RECORDING / "recording.json").read_text())
        assert recording["load_average_1min"]["before"] <= recording["machine"]["cores"] - MIN_IDLE_CORES, recording

    def test_the_calibration_predicts_every_recorded_run(self, llm_suite):
        """A floor, so a regression fails: on this recording the back-to-back calibration (with its idle
        response) kept every run at <= 85% load within the tolerance (docs/validation.md)."""
        from llm_validation_checks import JUDGED, judged, outside

        from sim.validation.llm import TOLERANCES

        runs = judged(llm_suite["calibrated"]["runs"])
        missed = {r["run"]: {k: round(r["error"][k], 3) for k in JUDGED} for r in runs if outside(r, TOLERANCES)}
        assert len(runs) == 6 and not missed, missed
