"""The CPU LLM validation suite, live: a real continuous-batching decoder server on this machine against
the token-level simulator.

The suite's recipe (calibration/llm_validation_suite.py: a 1-thread ``capsim calibrate --mode llm``, a
burst pilot per scheduler setting, six ``capsim bench-serve --llm`` runs) is run now, then ``capsim
validate`` four ways, and every assertion of tests/llm_validation_checks.py is made on the result. The
server is real, so a busy machine moves its figures: this runs only under ``make validate`` (which
measures the machine's load first; ``CAPSIM_LIVE_VALIDATION=1`` is what it sets). ``make test`` checks
the same assertions on the committed recording (tests/test_validation_llm_recorded.py).

    make validate CAPSIM_VALIDATION_OUT=docs/validation/cpu    # publishes this suite to docs/validation/llm-cpu
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from llm_validation_checks import LlmFidelityChecks, publish, validate_all_modes

if os.environ.get("CAPSIM_LIVE_VALIDATION") != "1":
    pytest.skip("live LLM fidelity run on a real server: `make validate` runs it, after measuring the machine's load",
                allow_module_level=True)
pytest.importorskip("torch")
pytestmark = [pytest.mark.slow, pytest.mark.live, pytest.mark.timeout(900)]

REPLICATIONS = 10


@pytest.fixture(scope="module")
def llm_suite(tmp_path_factory) -> dict:
    from calibration.llm_validation_suite import record_llm_suite

    work = tmp_path_factory.mktemp("validation-llm")
    recorded = record_llm_suite(work)
    target = os.environ.get("CAPSIM_VALIDATION_OUT")
    reports = validate_all_modes(recorded.run_dirs, recorded.profile, work, REPLICATIONS, plot=bool(target))
    if target:
        publish(work, recorded.profile, recorded.run_dirs, Path(target).parent / "llm-cpu")
    return reports


class TestLiveLlmServer(LlmFidelityChecks):
    """The suite's assertions on LLM runs made now, on this machine."""
