"""The CPU validation suite, live: a real batching server on this machine against the simulator.

The suite's recipe (calibration/validation_suite.py: a 1-thread calibration, a pilot per batching
setting, 12 ``capsim bench-serve`` runs) is run now, then ``capsim validate`` four ways, and every
assertion of tests/validation_checks.py is made on the result. The server is real, so a busy machine
(another process on a core) moves its figures: this runs only under ``make validate``, which measures
the machine's load first and refuses to judge on a busy one (``CAPSIM_LIVE_VALIDATION=1`` is what it
sets). ``make test`` checks the same assertions on the committed recording
(tests/test_validation_recorded.py) and smoke-tests one short live run (tests/test_validation_smoke.py).

The server's waiting behaviour is a parameter (``CAPSIM_VALIDATION_WAITS``, ``make validate WAIT=poll``
or ``WAIT="block poll"``; default block): each wait runs the whole suite, server and calibration waiting
that way (sim/serving/waiting.py).

Regenerate the committed results (docs/validation/cpu/) from a live run on a quiet machine with:
    make validate CAPSIM_VALIDATION_OUT=docs/validation/cpu        # a poll suite publishes to ...cpu-poll
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from validation_checks import FidelityChecks, publish, validate_all_modes

if os.environ.get("CAPSIM_LIVE_VALIDATION") != "1":
    pytest.skip("live fidelity run on a real server: `make validate` runs it, after measuring the machine's load",
                allow_module_level=True)
pytest.importorskip("torch")
pytestmark = [pytest.mark.slow, pytest.mark.live, pytest.mark.timeout(600)]

REPLICATIONS = 10
WAITS = os.environ.get("CAPSIM_VALIDATION_WAITS", "block").replace(",", " ").split()


@pytest.fixture(scope="module", params=WAITS)
def suite(tmp_path_factory, request) -> dict:
    from calibration.validation_suite import record_suite

    wait = request.param
    work = tmp_path_factory.mktemp(f"validation-{wait}")
    recorded = record_suite(work, wait=wait)
    target = os.environ.get("CAPSIM_VALIDATION_OUT")
    reports = validate_all_modes(recorded.run_dirs, recorded.profile, work, REPLICATIONS, plot=bool(target))
    if target:
        publish(work, recorded.profile, recorded.run_dirs, Path(target if wait == "block" else f"{target}-{wait}"))
    return reports


class TestLiveServer(FidelityChecks):
    """The suite's assertions on runs made now, on this machine."""
