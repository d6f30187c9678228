"""A profile from served runs: ``capsim profile from-run`` over ``capsim bench-serve`` run directories.

``capsim calibrate`` measures a model back to back and in a short replay; a server under real traffic
does not always run at those speeds (on a shared CPU its batch times drift by 10-40% between runs a
minute apart, and a batch after an idle gap is slower than one right after another). A
``capsim bench-serve`` run records every request and every batch's start, end and size: a request log
(sim/profiles/requestlog.py) with what the server measured besides -- how late it started each batch
once due (``late_s``), which batches were first calls, and its warm-up's first calls (``run.json``).
:func:`profile_from_runs` is a thin reader: it turns each run into a
:class:`~sim.profiles.requestlog.ServedLog` and leaves the estimation to
:func:`sim.profiles.fromlog.profile_from_logs`, the same as ``capsim profile from-log``. Its default
speed model is ``level`` (the CPU suite in docs/validation.md is validated with it): per batch size the
served times, divided by the idle response at their gap and by a slow speed level walked per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sim.errors import CapsimError
from sim.profiles.fromlog import SPEEDS, profile_from_logs
from sim.profiles.requestlog import ServedLog, batch_gaps
from sim.profiles.speed import GAP_EDGES_S, idle_response, ratio_at, slow_level
from sim.serving.waiting import recorded_wait

__all__ = ["GAP_EDGES_S", "SPEEDS", "batch_gaps", "idle_response", "log_of_run", "profile_from_runs", "ratio_at",
           "slow_level"]


def profile_from_runs(runs: Sequence, source: str = "", max_batch_size: int | None = None,
                      speed: str = "level", base=None) -> dict:
    """A profile document from ``sim.validation.validate.BenchRun`` objects of one model/device, covering
    batch sizes up to ``max_batch_size`` (default: the largest the runs allowed).

    ``speed="level"`` models the server's slow speed level (a path walked from a random start): a
    profile for simulating other traffic. ``speed="trace"`` (one run only) keeps every batch's own speed
    with its start time (``service_level.phase: aligned``): the simulator then replays the run's machine
    speed at the moments it had it, and each size's samples collapse to its median -- a replay of that
    run, for validating the batching and queueing against it. ``speed="regime"``: the regime model of
    sim/profiles/regime.py, over the back-to-back ``base`` profile where given.
    """
    if not runs:
        raise CapsimError("profile from-run: no runs given")
    keys = {(r.settings.get("model"), r.settings.get("device"), r.settings.get("dtype"), r.settings.get("threads"))
            for r in runs}
    if len(keys) > 1:
        raise CapsimError(f"profile from-run: the runs differ in model/device/dtype/threads {sorted(map(str, keys))}; "
                          "give runs of one model on one device")
    waits = sorted({recorded_wait(r.settings) for r in runs})
    if len(waits) > 1:
        raise CapsimError(f"profile from-run: the runs' servers waited for work differently ({', '.join(waits)}: "
                          "bench-serve --wait), and the idle response depends on it; give runs of one")
    doc = profile_from_logs([log_of_run(r) for r in runs], base=base, speed=speed, max_batch_size=max_batch_size,
                            source=source, method="from-run")
    doc["calibration"]["runs"] = [str(r.path) for r in runs]
    doc["server"] = {"wait": waits[0]}  # what its idle response was measured under (sim/serving/waiting.py)
    return doc


def log_of_run(run) -> ServedLog:
    """A bench-serve run as a served log: the requests that started in a batch, each arriving when the
    server received it (the schedule plus the load generator's delivery delay: its queue state), the
    batches with the server's own ``late_s`` (NaN where it recorded none) and first-call flags, its
    batching rule, and the sizes its warm-up ran (none stall in the log)."""
    started = np.isfinite(run.requests["start_s"].to_numpy(float))
    requests = run.requests[started]
    received = requests["arrival_s"].to_numpy(float) + run.delivery_s()[started]
    replica = np.broadcast_to(np.asarray(requests.get("replica", 0), np.int64), len(requests))
    batches = run.batches.copy()
    if "late_s" not in batches:
        batches["late_s"] = np.nan
    batching = run.settings.get("batching") or {}
    warm = {int(b) for w in run.settings.get("warmup") or [] for b in w.get("sizes") or []}
    return ServedLog(
        name=run.name, requests=pd.DataFrame({"replica": replica, "arrival_s": received}),
        batches=batches, max_batch_size=int(batching.get("max_batch_size") or batches["size"].max()),
        max_queue_delay_s=float(batching.get("max_queue_delay_s") or 0.0), warm_sizes=frozenset(warm) or None,
        settings=run.settings)
