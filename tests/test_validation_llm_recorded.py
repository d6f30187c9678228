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

from pathlib import Path

import pytest
from llm_validation_checks import (
    LlmFidelityChecks,
    check_run_recorded_every_request,
    validate_all_modes,
)
from validation_checks import check_recorded_on_a_quiet_machine, validate_recording
from validation_checks import recorded_runs as shared_recorded_runs

from calibration.llm_validation_suite import PROFILE_NAME

pytestmark = pytest.mark.slow  # about 30 s: 6 runs validated four ways, 10 replications each

RECORDING = Path(__file__).parent / "data" / "recordings" / "llm-cpu"
REPLICATIONS = 10
SEED = 0


def recorded_runs() -> list[Path]:
    return shared_recorded_runs(RECORDING)


@pytest.fixture(scope="module")
def llm_suite(tmp_path_factory) -> dict:
    return validate_recording(RECORDING, PROFILE_NAME, tmp_path_factory.mktemp("validation-llm-recorded"),
                              REPLICATIONS, SEED, validate_all_modes)


class TestCommittedLlmRecording(LlmFidelityChecks):
    """The suite's assertions on the committed recording."""

    @pytest.mark.parametrize("run_dir", recorded_runs(), ids=lambda p: p.name)
    def test_the_recording_holds_every_request(self, run_dir):
        check_run_recorded_every_request(run_dir)

    def test_the_recording_was_made_on_a_quiet_machine(self):
        check_recorded_on_a_quiet_machine(RECORDING)

    def test_the_calibration_predicts_every_recorded_run(self, llm_suite):
        """A floor, so a regression fails: on this recording the back-to-back calibration (with its idle
        response) kept every run at <= 85% load within the tolerance (docs/validation.md)."""
        from llm_validation_checks import JUDGED, judged, outside

        from sim.validation.llm import TOLERANCES

        runs = judged(llm_suite["calibrated"]["runs"])
        missed = {r["run"]: {k: round(r["error"][k], 3) for k in JUDGED} for r in runs if outside(r, TOLERANCES)}
        assert len(runs) == 6 and not missed, missed
