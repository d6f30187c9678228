"""One short live run of the real batching server, validated: it ran, it recorded, the figures are printed.

A smoke check, not a judgement: two seconds of traffic on whatever this machine is doing, so nothing is
asserted about how close the simulator came (the committed recording is judged in
tests/test_validation_recorded.py, a live suite by ``make validate``). Asserted: the server served or
timed out every scheduled request exactly once and wrote every file, and ``capsim validate`` reported a
finite figure for each metric.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from validation_checks import check_run_recorded_every_request

from calibration.validation_suite import MODEL, THREADS, capsim
from sim.cli import main as capsim_main
from sim.validation.validate import METRICS

pytest.importorskip("torch")


def test_a_short_live_run_is_recorded_and_validated(tmp_path):
    run_dir = tmp_path / "b8-d2ms-300rps"
    capsim("bench-serve", "--model", MODEL, "--threads", str(THREADS), "--max-batch-size", "8",
           "--max-queue-delay-ms", "2", "--rate", "300", "--duration", "2", "--seed", "1", "--out", str(run_dir))
    check_run_recorded_every_request(run_dir)
    for mode in ("replay", "self"):
        out = tmp_path / f"from-run-{mode}"
        assert capsim_main(["validate", str(run_dir), "--from-run", mode, "--replications", "3", "--no-plot",
                            "--out", str(out)]) == 0
        record = json.loads((out / "validation.json").read_text())["runs"][0]
        print(f"\nlive smoke run, from-run {mode}: load {record['load']:.0%}, disturbed {record['disturbed']}, "
              f"(sim - real) / real: {({k: round(record['error'][k], 3) for k in METRICS})}")
        for key in METRICS:
            assert np.isfinite(record["real"][key]) and np.isfinite(record["sim"][key]), (mode, key)
            assert np.isfinite(record["error"][key]), (mode, key)
