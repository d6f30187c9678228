"""Per-run timelines: the engine's samples joined with rates and windowed percentiles from records.

Each row of the time series covers the interval ``(time_s - dt, time_s]`` for the rate columns:
``arrival_rate_rps``, ``throughput_rps``; ``latency_p50_s`` / ``latency_p99_s`` are over requests
that finished in the last ``window`` (at least 5 s or 5 samples); ``utilization`` is the busy
share of billed replicas in the interval; ``cost_rate_usd_per_h`` is billed replicas × price.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def enrich_timeseries(ts: pd.DataFrame, requests: pd.DataFrame, batches: pd.DataFrame, replicas: pd.DataFrame,
                      scenario, dt: float) -> pd.DataFrame:
    ts = ts.copy()
    t = ts["time_s"].to_numpy()
    arrivals = np.sort(requests["arrival_s"].to_numpy())
    served = requests[requests["outcome"] == "served"]
    order = np.argsort(served["end_s"].to_numpy(), kind="stable")
    ends = served["end_s"].to_numpy()[order]
    lats = served["latency_s"].to_numpy()[order]
    counts_arr = np.searchsorted(arrivals, t, side="right")
    counts_end = np.searchsorted(ends, t, side="right")
    ts["arrival_rate_rps"] = np.diff(counts_arr, prepend=0) / dt
    ts["throughput_rps"] = np.diff(counts_end, prepend=0) / dt
    window = max(5.0, 5 * dt)
    lo = np.searchsorted(ends, t - window, side="right")
    p50, p99 = np.full(t.size, np.nan), np.full(t.size, np.nan)
    for k in range(t.size):
        if counts_end[k] > lo[k]:
            p50[k], p99[k] = np.percentile(lats[lo[k]:counts_end[k]], (50, 99))
    ts["latency_p50_s"] = p50
    ts["latency_p99_s"] = p99
    ts["utilization"] = _utilization(t, dt, batches, ts["billed_replicas"].to_numpy(), replicas)
    ts["cost_rate_usd_per_h"] = ts["billed_replicas"] * scenario.cost.usd_per_replica_hour
    return ts


def _utilization(t: np.ndarray, dt: float, batches: pd.DataFrame, billed: np.ndarray, replicas) -> np.ndarray:
    """Busy instance-seconds in each interval / (billed replicas × instances × dt)."""
    if batches.empty:
        return np.zeros(t.size)
    edges = np.concatenate([[t[0] - dt], t])
    start, end = batches["start_s"].to_numpy(), batches["end_s"].to_numpy()
    busy = _integral(edges, start, end)
    inst = int(replicas["instances"].iloc[0]) if len(replicas) else 1
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.diff(busy) / (np.maximum(billed, 1) * inst * dt)
    return np.clip(out, 0, 1)


def _integral(edges: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Total busy time of [start, end) intervals up to each edge."""
    s, e = np.sort(start), np.sort(end)
    cs, ce = np.concatenate([[0.0], np.cumsum(s)]), np.concatenate([[0.0], np.cumsum(e)])
    ks, ke = np.searchsorted(s, edges, side="right"), np.searchsorted(e, edges, side="right")
    # ∫ busy = Σ_started (min(x, end) - start) = (ks*x - Σ start) - (ke*x - Σ end over ended)
    return (ks * edges - cs[ks]) - (ke * edges - ce[ke])
