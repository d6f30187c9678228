"""The simulator against the committed recording of a real CPU batching server: deterministic.

tests/data/recordings/cpu/ holds one run of the CPU validation suite on a quiet machine
(``scripts/record_validation_cpu.py``: the 1-thread calibration and the 12 ``capsim bench-serve`` runs,
with the machine's load average in ``recording.json``). ``capsim validate`` replays them four ways with
fixed seeds, and every assertion of the suite (tests/validation_checks.py) is made on the result: a
simulation of recorded data, so the figures are the same on any machine, busy or not. The live run
of the same suite is ``make validate``.

Publish the figures (docs/validation/cpu/: per mode validation.json and QQ plots) with
    CAPSIM_VALIDATION_OUT=docs/validation/cpu .venv/bin/python -m pytest tests/test_validation_recorded.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
from validation_checks import (
    WRONG_RULES,
    FidelityChecks,
    check_recorded_on_a_quiet_machine,
    check_run_recorded_every_request,
    validate_all_modes,
    validate_recording,
    wrong_rule_replays,
)
from validation_checks import recorded_runs as shared_recorded_runs

from calibration.validation_suite import PROFILE_NAME

pytestmark = pytest.mark.slow  # about a minute: 12 runs validated four ways, 10 replications each

RECORDING = Path(__file__).parent / "data" / "recordings" / "cpu"
REPLICATIONS = 10
SEED = 0


def recorded_runs() -> list[Path]:
    return shared_recorded_runs(RECORDING)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> dict:
    return validate_recording(RECORDING, PROFILE_NAME, tmp_path_factory.mktemp("validation-recorded"), REPLICATIONS, SEED,
                              validate_all_modes)


class TestCommittedRecording(FidelityChecks):
    """The suite's assertions on the committed recording."""

    @pytest.mark.parametrize("run_dir", recorded_runs(), ids=lambda p: p.name)
    def test_the_recording_holds_every_request(self, run_dir):
        check_run_recorded_every_request(run_dir)

    def test_the_recording_was_made_on_a_quiet_machine(self):
        check_recorded_on_a_quiet_machine(RECORDING)

    def test_the_negative_control_passes_the_right_rule(self, suite, tmp_path):
        """The negative control's misses come from the rule: the same replays, through the same code and
        judged by the same bounds, with the run's own batching rule are within the tolerance."""
        right = {"the run's own rules": (lambda b: b, WRONG_RULES["no queue delay"][1])}
        kept = wrong_rule_replays(suite["run_dirs"], suite["from-run-replay"]["runs"], tmp_path, right)
        print(f"\nreplay with the run's own batching rule (errors): {kept}")
        assert kept and not any(missed for *_, missed in kept), kept
