"""``capsim bench-serve``: a real dynamic-batching server on torch, fed open-loop, recorded per request.

Writes ``RUN_DIR/requests.parquet`` (the simulator's request columns: replication, id, arrival_s,
start_s, end_s, latency_s, queue_s, replica, batch_size, outcome), ``batches.parquet`` (the simulator's
batch columns), ``loadgen.parquet`` (per request: when the load generator released it and when the
server received it) and ``run.json`` (settings, environment, warm-up, timing diagnostics).
``capsim validate RUN_DIR`` replays the same arrivals through the simulator. See docs/validation.md.

The command line is ``sim/cli/bench_serve.py``; torch is imported only when :func:`serve` runs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np


def serve(config_fields: dict, arrivals: np.ndarray, settings: dict, out: Path, force: bool = False) -> int:
    """Serve ``arrivals`` with the server ``config_fields`` describes (``ServeConfig``'s fields; replicas,
    router and seed in ``settings``), write the run directory ``out`` (a non-empty one is replaced only
    with ``force``) and print what it saw."""
    import torch  # noqa: F401

    from calibration.calibrate import resolve_device
    from calibration.models import check_model_name
    from calibration.server import ServeConfig

    config = ServeConfig(**config_fields)
    check_model_name(config.model)
    resolve_device(config.device)
    replicas = int(settings.get("replicas") or 1)
    started, before = time.perf_counter(), _machine()
    if replicas > 1:
        from calibration.server_pool import run_pool

        raw = run_pool(config, arrivals, replicas, settings["router"], settings["seed"])
    else:
        from calibration.server import run_server

        raw = run_server(config, arrivals)
    after = _machine()
    raw["machine"] = {"cores": os.cpu_count(), "loadavg_1m_before": before["loadavg_1m"],
                      "loadavg_1m_after": after["loadavg_1m"],
                      "involuntary_switches": after["involuntary_switches"] - before["involuntary_switches"],
                      "note": "load average includes this run; involuntary context switches of this process "
                              "(and finished children) during warm-up and run: the machine was contended "
                              "when they are many"}
    out = write_run_dir(out, raw, arrivals, config, settings, time.perf_counter() - started, force=force)
    run = json.loads((out / "run.json").read_text())
    s = run["observed"]
    print(f"wrote {out}/ ({s['requests']} requests, {s['served']} served, mean batch {s['mean_batch_size']:.2f}, "
          f"p50 {s['latency_p50_s'] * 1e3:.2f} ms, p99 {s['latency_p99_s'] * 1e3:.2f} ms, "
          f"load generator late by > 1 ms: {run['loadgen']['late_over_1ms_share'] * 100:.2f}%)")
    return 0


def _machine() -> dict:
    import resource

    switches = sum(resource.getrusage(who).ru_nivcsw for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"loadavg_1m": round(os.getloadavg()[0], 2), "involuntary_switches": switches}


# ---------------------------------------------------------------- assembling the records
def frames(raw: dict, arrival_s: np.ndarray):
    """(requests, batches, loadgen) frames in the simulator's record layout from the servers' records.

    A request still queued when the server gave up draining is ``timed_out`` (never started)."""
    import pandas as pd

    from sim.results.records import SERVED, TIMED_OUT, batch_frame, request_frame

    n = arrival_s.size
    start, end = np.full(n, np.nan), np.full(n, np.nan)
    size = np.zeros(n, dtype=np.int32)
    received = np.full(n, np.nan)
    b_rows = []
    for k, rec in enumerate(raw["records"]):
        b_rows += [(k, s, e, b, late) for s, e, b, late in
                   zip(rec.batch_start_s, rec.batch_end_s, rec.batch_size, rec.batch_late_s)]
        for rid, j in rec.batch_of.items():
            start[rid], end[rid], size[rid] = rec.batch_start_s[j], rec.batch_end_s[j], rec.batch_size[j]
        for rid, t in rec.received_s.items():
            received[rid] = t
    served = np.isfinite(end)
    requests = request_frame(arrival_s, start, end, np.where(served, raw["replica_of"], -1), size,
                             np.where(served, SERVED, TIMED_OUT))
    requests.insert(0, "replication", np.zeros(n, dtype=np.int64))
    b_rows.sort(key=lambda r: (r[1], r[0]))
    replica, b_start, b_end, b_size, late = (list(col) for col in zip(*b_rows)) if b_rows else ([],) * 5
    batches = batch_frame(replica, b_start, b_end, b_size, [False] * len(b_rows), late_s=np.asarray(late, float))
    loadgen = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "sent_s": raw["sent_s"], "received_s": received})
    return requests, batches, loadgen


def write_run_dir(out: Path, raw: dict, arrival_s: np.ndarray, config, settings: dict, wall_s: float,
                  force: bool = False) -> Path:
    """The run directory, written atomically (``sim.results.files``)."""
    import torch

    from calibration.writer import environment
    from sim.results.files import writing_folder

    requests, batches, loadgen = frames(raw, arrival_s)
    lag = (loadgen["sent_s"] - requests["arrival_s"]).to_numpy()
    served = requests[requests["outcome"] == "served"]
    lat = served["latency_s"].to_numpy()
    late = batches["late_s"].to_numpy()
    service = (batches["end_s"] - batches["start_s"]).to_numpy()
    run = {
        "schema": "capsim.bench-serve/1",
        "model": config.model, "device": config.device, "dtype": config.dtype,
        "threads": raw["threads"],
        "batching": {"max_batch_size": config.max_batch_size, "max_queue_delay_s": config.max_queue_delay_s,
                     "preferred_batch_sizes": list(config.preferred_batch_sizes),
                     "delay_counted_from": "when the server received the oldest request"},
        **settings,
        "warmup": raw["warmup"],
        "environment": environment(torch.device(config.device)),
        "clock": "time.perf_counter (CLOCK_MONOTONIC), seconds from a common t0; arrival_s is the schedule",
        "loadgen": {"lag_mean_s": _r(np.mean(lag)), "lag_p99_s": _r(np.percentile(lag, 99)),
                    "lag_max_s": _r(np.max(lag)), "late_over_1ms_share": _r(float(np.mean(lag > 1e-3)))},
        "server": {"wait": config.wait,  # how it waited for work (sim/serving/waiting.py)
                   "batch_late_median_s": _r(np.median(late)) if late.size else None,
                   "batch_late_p99_s": _r(np.percentile(late, 99)) if late.size else None,
                   "batch_late_note": "batch start - when the batching rules made it due (wake-ups, GIL, "
                                      "scheduling); the simulator starts batches exactly when due",
                   "busy_s": _r(float(service.sum())),
                   "abandoned": sum(len(r.abandoned) for r in raw["records"])},
        "observed": {"requests": int(len(requests)), "served": int(len(served)), "batches": int(len(batches)),
                     "mean_batch_size": _r(float(batches["size"].mean())) if len(batches) else None,
                     "latency_p50_s": _r(np.percentile(lat, 50)) if lat.size else None,
                     "latency_p99_s": _r(np.percentile(lat, 99)) if lat.size else None},
        "machine": raw.get("machine", {}),
        "wall_s": round(wall_s, 2),
    }
    with writing_folder(out, force=force) as tmp:
        requests.to_parquet(tmp / "requests.parquet", index=False)
        batches.to_parquet(tmp / "batches.parquet", index=False)
        loadgen.to_parquet(tmp / "loadgen.parquet", index=False)
        (tmp / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return out


def _r(x) -> float:
    return float(f"{float(x):.6g}")
