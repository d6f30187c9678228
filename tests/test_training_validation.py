"""Training predictions against real PyTorch DDP runs (gloo, CPU), judged on the committed recording.

``tests/data/recordings/training/`` holds one run of ``scripts/record_training_validation.py --record`` on a
quiet machine: the training profile of the built-in MLP (``capsim calibrate --mode train``: one process's
steps; the gloo all-reduce on 2 processes) and the step times of real DDP runs on 1 and 2 processes. The
prediction of each run comes from the profile alone; the figures are the same on any machine. A live
smoke run (calibration and a short DDP run here and now) checks only that the path works: a busy machine
cannot fail it. The live comparison is ``make validate-training``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sim.validation.training import TOLERANCE, RunSpec, compare, load_recording, predict

RECORDING = Path(__file__).resolve().parent / "data" / "recordings" / "training"


@pytest.fixture(scope="module")
def recorded():
    profile, runs, facts = load_recording(RECORDING)
    return profile, runs, facts, compare(profile, runs)


def test_recorded_ddp_runs_agree_with_the_prediction(recorded):
    _, _, facts, table = recorded
    print(f"\nrecorded {facts['recorded_utc']} on {facts['machine']['cpu']} ({facts['machine']['cores']} cores); "
          f"load before: {facts['load_before']}")
    print(f"{'processes':>9} {'micro×acc':>9} {'measured ms':>11} {'predicted ms':>12} {'error':>7} "
          f"{'samples/s measured':>18} {'predicted':>9}   (sync, exposed of all, ms)")
    for r in table.itertuples():
        print(f"{r.processes:>9} {r.micro_batch:>5}×{r.accumulation:<3} {r.measured_step_s * 1e3:>11.2f} "
              f"{r.predicted_step_s * 1e3:>12.2f} {r.error:>+7.1%} {r.measured_samples_per_s:>18.0f} "
              f"{r.predicted_samples_per_s:>9.0f}   ({r.sync_exposed_s * 1e3:.2f} of {r.sync_s * 1e3:.2f})")
    assert set(table["processes"]) >= {1, 2}
    assert (table["error"].abs() <= TOLERANCE).all(), table[["processes", "micro_batch", "accumulation", "error"]]
    two = table[table["processes"] == 2]
    assert (two["sync_exposed_s"] > 0).all() and (table[table["processes"] == 1]["sync_s"] == 0).all()


def test_without_the_gradient_sync_the_two_process_runs_are_missed(recorded):
    """A negative control: the agreement at 2 processes is the all-reduce's, not a coincidence of compute."""
    _, _, _, table = recorded
    two = table[table["processes"] == 2]
    blind = (two["predicted_step_s"] - two["sync_exposed_s"]) / two["measured_step_s"] - 1
    print("\nwithout the exposed all-reduce, errors at 2 processes: " + ", ".join(f"{e:+.1%}" for e in blind))
    assert (blind < -TOLERANCE).any()


def test_predictions_read_only_the_profile(recorded):
    profile, runs, _, table = recorded
    again = predict(profile, RunSpec(**runs[-1]["spec"])).total_s
    assert again == table["predicted_step_s"].iloc[-1]


@pytest.mark.torch
@pytest.mark.timeout(240)
def test_live_smoke_calibrate_train_and_a_real_ddp_run(tmp_path):
    """Live, on this machine now: calibrate a tiny model in train mode, run 2-process DDP, predict it.
    Asserts only that everything ran and every figure is finite (a busy machine changes the figures)."""
    torch = pytest.importorskip("torch")
    from calibration.ddp_run import DdpRunSpec, run_ddp
    from sim.cli import main

    threads = torch.get_num_threads()
    out = tmp_path / "tiny-train.json"
    try:
        assert main(["calibrate", "--mode", "train", "--model", "test-tiny", "--batch-sizes", "4,8", "--quick",
                     "--no-progress", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    steps = run_ddp(DdpRunSpec("test-tiny", 2, 8, accumulation=2, steps=4, warmup=1))
    table = compare(out, [{"spec": {"model": "test-tiny", "world_size": 2, "micro_batch": 8, "accumulation": 2},
                           "step_s": steps}])
    r = table.iloc[0]
    print(f"\nlive, test-tiny on 2 gloo processes: measured {r.measured_step_s * 1e3:.2f} ms, predicted "
          f"{r.predicted_step_s * 1e3:.2f} ms ({r.error:+.0%}; not judged)")
    assert len(steps) == 4 and all(t > 0 for t in steps)
    assert math.isfinite(r.predicted_step_s) and r.predicted_step_s > 0 and r.sync_s > 0
