"""A profile predicts the throughput of a server loop it did not time.

For the fraud MLP at batch 1, 8 and 32: predicted = batch / (median latency + median host
overhead) from a fresh calibration; measured = batch / median batch time of an independent
back-to-back serving loop (queue -> torch.cat -> forward -> split into futures). Both run with
one torch thread, set explicitly: two OpenMP threads on a 2-core shared box stall at every
barrier when anything else wakes, which scattered single trials from 0.55 to 1.12. Each size
runs five interleaved (calibrate, measure) trials of ~300 batches and the median ratio must be
within 10%.

Both sides are real timings, so another process on a core moves them (a busy CI box has put batch 1 at
0.900): the 10% check runs under ``make validate`` (``CAPSIM_LIVE_VALIDATION=1``, after the machine's
load is measured). ``make test`` runs one trial at batch 8 as a smoke test, judged within a factor of
two, which a busy machine does not reach and a calibration that mis-times a batch does.
"""

from __future__ import annotations

import os
import queue
import statistics
import time
from concurrent.futures import Future

import numpy as np
import pytest

from sim.profiles.profile import profile_from_dict

torch = pytest.importorskip("torch")

from calibration.calibrate import CalibrationRequest, calibrate  # noqa: E402
from calibration.models import build_model  # noqa: E402

TRIALS = 5
THREADS = 1
TOLERANCE = 0.10
LIVE = os.environ.get("CAPSIM_LIVE_VALIDATION") == "1"


def back_to_back_throughput(model, make_input, batch_size: int, n_batches: int = 300) -> float:
    """Requests per second of a minimal serving loop, from its median batch time."""
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(batch_size * n_batches):
        pending.put((make_input(1), Future()))
    times = []
    with torch.inference_mode():
        for _ in range(n_batches):
            start = time.perf_counter()
            batch = [pending.get_nowait() for _ in range(batch_size)]
            out = model(torch.cat([x for x, _ in batch]))
            for (_, future), row in zip(batch, out.unbind(0), strict=True):
                future.set_result(row)
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def predicted_throughput(batch_size: int) -> float:
    doc = calibrate(CalibrationRequest(model="mlp", batch_sizes=(batch_size,), samples=200, warmup=10,
                                       replay_batches=0, measure_load=False, progress=False, threads=THREADS))
    p = profile_from_dict(doc)
    service = np.median(p.latency_s[batch_size]) + np.median(p.host_overhead_for(batch_size))
    return batch_size / service


def ratios(batch_size: int, trials: int) -> list[float]:
    """predicted / measured throughput of ``trials`` interleaved (calibrate, measure) trials."""
    built = build_model("mlp")
    model = built.model.eval()
    out = []
    threads = torch.get_num_threads()
    try:
        for _ in range(trials):
            predicted = predicted_throughput(batch_size)
            torch.set_num_threads(THREADS)
            measured = back_to_back_throughput(model, built.make_input, batch_size)
            out.append(predicted / measured)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.skipif(not LIVE, reason="live timing on this machine: `make validate` runs it, after measuring the "
                                     "machine's load")
@pytest.mark.parametrize("batch_size", [1, 8, 32])
def test_profile_predicts_back_to_back_throughput_within_10_percent(batch_size):
    found = ratios(batch_size, TRIALS)
    ratio = statistics.median(found)
    print(f"batch {batch_size}: predicted/measured median {ratio:.3f} over {[round(float(r), 3) for r in found]}")
    assert abs(ratio - 1) <= TOLERANCE, found


def test_a_calibration_predicts_a_serving_loop_within_a_factor_of_two():
    (ratio,) = ratios(8, 1)
    print(f"batch 8: predicted/measured {ratio:.3f}")
    assert 0.5 <= ratio <= 2.0
