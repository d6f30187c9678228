"""Metrics as pure functions of the flat records of a run.

Only requests arriving inside the measurement window ``[warmup_s, horizon_s)`` are measured (throughput:
requests completed inside it); GPU-hours
and cost cover the whole billed period. An overloaded run is flagged ``unstable`` and its latency
figures are withheld (NaN) rather than presented as steady state: the observed p99 is still
reported, under a name that says it is not a steady-state figure.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.results.records import OUTCOMES, REJECTED, SERVED, TIMED_OUT, UNFINISHED, outcome_codes

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def latency_stats(latency_s: np.ndarray) -> dict[str, float]:
    """Mean and p50/p90/p95/p99/p99.9 of served latencies (NaN when none)."""
    if latency_s.size == 0:
        return {"latency_mean_s": math.nan, **{f"latency_{k}_s": math.nan for k in PERCENTILES}}
    qs = np.percentile(latency_s, list(PERCENTILES.values()))
    return {"latency_mean_s": float(latency_s.mean()),
            **{f"latency_{k}_s": float(q) for k, q in zip(PERCENTILES, qs)}}


def busy_seconds(starts: np.ndarray, ends: np.ndarray, t0: float, t1: float) -> float:
    """Total overlap of [start, end) intervals with [t0, t1)."""
    return float(np.clip(np.minimum(ends, t1) - np.maximum(starts, t0), 0, None).sum())


def backlog_trend(arrival_s: np.ndarray, done_s: np.ndarray, horizon_s: float, points: int = 60):
    """Backlog (arrived, not finished) over the second half of the horizon: (times, backlog, slope/s)."""
    times = np.linspace(horizon_s / 2, horizon_s, points)
    arrived = np.searchsorted(np.sort(arrival_s), times, side="right")
    finished = np.searchsorted(np.sort(done_s), times, side="right")
    backlog = arrived - finished
    slope = float(np.polyfit(times, backlog, 1)[0]) if points > 1 and horizon_s > 0 else 0.0
    return times, backlog, slope


def is_unstable(offered_rps: float, capacity_rps: float, slope_rps: float, backlog_end: float,
                backlog_mid: float) -> bool:
    """Overloaded if the offered rate reaches capacity, or the backlog visibly grows to the end.

    ``capacity_rps`` 0 skips the first rule (a bounded queue sheds the excess and stays finite).
    Empirical rule (for traffic whose mean rate is not known, e.g. traces and spikes): the backlog
    grows by more than 5% of the offered rate over the last half of the horizon and ends above
    both 50 requests and twice its mid-horizon level.
    """
    if capacity_rps > 0 and offered_rps >= capacity_rps:
        return True
    growing = slope_rps > 0.05 * offered_rps
    return bool(growing and backlog_end > 50 and backlog_end > 2 * max(backlog_mid, 1))


def summarize(requests: pd.DataFrame, batches: pd.DataFrame, replicas: pd.DataFrame, *, warmup_s: float,
              horizon_s: float, slo_latency_s: float, slo_percentile: float, usd_per_replica_hour: float,
              offered_rps: float, capacity_rps: float, queue_bounded: bool = False) -> dict[str, float | int | bool]:
    """The flat summary of one run (keys as in summary.json)."""
    window = horizon_s - warmup_s
    arr = requests["arrival_s"].to_numpy()
    codes = outcome_codes(requests)
    inside = (arr >= warmup_s) & (arr < horizon_s)
    served_in = inside & (codes == SERVED)
    latency = requests["latency_s"].to_numpy()[served_in]
    counts = np.bincount(codes[inside], minlength=len(OUTCOMES))
    stats = latency_stats(latency)
    n_total = int(inside.sum())
    n_served = int(counts[SERVED])
    within = int((latency <= slo_latency_s).sum())
    slo_q = float(np.percentile(latency, slo_percentile)) if latency.size else math.nan

    b_start = batches["start_s"].to_numpy()
    b_end = batches["end_s"].to_numpy()
    b_in = (b_start >= warmup_s) & (b_start < horizon_s)
    util, busy_total, capacity_total = [], 0.0, 0.0
    b_rep = batches["replica"].to_numpy()
    for rep, inst, born, gone in replicas[["replica", "instances", "created_s", "gone_s"]].itertuples(index=False):
        t0, t1 = max(warmup_s, born), min(horizon_s, gone)
        if t1 <= t0:
            continue
        mask = b_rep == rep
        busy = busy_seconds(b_start[mask], b_end[mask], t0, t1)
        util.append(busy / (inst * (t1 - t0)))
        busy_total += busy
        capacity_total += inst * (t1 - t0)
    billed_s = np.clip(np.minimum(replicas["gone_s"].to_numpy(), horizon_s) - replicas["created_s"].to_numpy(), 0,
                       None)
    gpu_hours = float(billed_s.sum() / 3600.0)
    cost = gpu_hours * usd_per_replica_hour

    _, backlog, slope = backlog_trend(arr, requests["end_s"].to_numpy(), horizon_s)
    arrived_rps = n_total / window if window > 0 else math.nan
    offered = offered_rps if math.isfinite(offered_rps) else arrived_rps
    # A bounded queue (queue limit or timeouts) sheds the excess: only a growing backlog is unstable.
    unfinished = int(counts[UNFINISHED])
    # ... and a run stopped by its drain limit with requests left has no steady-state percentiles either.
    unstable = unfinished > 0 or is_unstable(offered, 0.0 if queue_bounded else capacity_rps, slope,
                                             float(backlog[-1]), float(backlog[0]))
    # Served throughput: completions inside the window (an overloaded fleet completes at its capacity).
    ends = requests["end_s"].to_numpy()[codes == SERVED]
    throughput = int(((ends >= warmup_s) & (ends < horizon_s)).sum()) / window if window > 0 else math.nan

    summary: dict[str, float | int | bool] = {
        **stats,
        f"latency_p{slo_percentile:g}_slo_s": slo_q,
        "throughput_rps": throughput,
        "offered_rps": offered,
        "goodput_share": within / n_total if n_total else math.nan,
        "goodput_rps": within / window if window > 0 else math.nan,
        "slo_met": bool(slo_q <= slo_latency_s) if latency.size else False,
        "requests_total": n_total,
        "requests_served": n_served,
        "requests_rejected": int(counts[REJECTED]),
        "requests_timed_out": int(counts[TIMED_OUT]),
        "requests_unfinished": unfinished,
        "mean_batch_size": float(batches["size"].to_numpy()[b_in].mean()) if b_in.any() else math.nan,
        "utilization": busy_total / capacity_total if capacity_total > 0 else math.nan,
        "utilization_max": float(np.max(util)) if util else math.nan,
        "replicas_mean": float(billed_s.sum() / horizon_s) if horizon_s > 0 else math.nan,
        "gpu_hours": gpu_hours,
        "cost_usd": cost,
        "cost_per_hour_usd": cost / (horizon_s / 3600.0) if horizon_s > 0 else math.nan,
        "cost_per_million_requests_usd": cost / n_served * 1e6 if n_served else math.nan,
        "capacity_rps": capacity_rps,
        "unstable": unstable,
        "overloaded": bool(capacity_rps > 0 and offered >= capacity_rps),
        "shed_share": int(counts[REJECTED] + counts[TIMED_OUT]) / n_total
        if n_total else math.nan,
        "backlog_at_end": int(backlog[-1]),
        "backlog_growth_rps": slope,
        "latency_p99_observed_s": stats["latency_p99_s"],
    }
    if unstable:  # never present a p99 of an unbounded queue as a steady-state figure
        for key in stats:
            summary[key] = math.nan
        summary[f"latency_p{slo_percentile:g}_slo_s"] = math.nan
        summary["slo_met"] = False
    return summary


def slo_violation(requests: pd.DataFrame, warmup_s: float, horizon_s: float, slo_latency_s: float,
                  percentile: float, window_s: float | None = None, late: np.ndarray | None = None) -> dict:
    """Minutes of SLO violation: windows whose ``percentile`` latency exceeds the SLO.

    A window violates when more than (100 − percentile)% of the requests arriving in it were not
    served within ``slo_latency_s`` (rejected and timed-out requests count as late), or, given ``late``
    (one flag per request: an LLM request outside its TTFT or TPOT objective), were late by it. Default
    window: 60 s, or a tenth of the measured period when that is shorter.
    """
    measured = horizon_s - warmup_s
    window = float(window_s or min(60.0, measured / 10.0))
    arrival = requests["arrival_s"].to_numpy()
    inside = (arrival >= warmup_s) & (arrival < horizon_s)
    if late is None:
        late = ~((requests["outcome"].to_numpy() == "served") & (requests["latency_s"].to_numpy() <= slo_latency_s))
    n_windows = max(1, int(math.ceil(measured / window - 1e-9)))
    index = np.minimum(((arrival[inside] - warmup_s) // window).astype(np.int64), n_windows - 1)
    total = np.bincount(index, minlength=n_windows)
    bad = np.bincount(index, weights=late[inside], minlength=n_windows)
    violated = (total > 0) & (bad > (1 - percentile / 100.0) * total)
    return {"slo_window_s": window, "slo_windows": n_windows, "slo_windows_violated": int(violated.sum()),
            "slo_violation_min": float(violated.sum() * window / 60.0)}


def replicate_summary(runs: list[dict], level: float = 0.95) -> dict[str, float | int | bool]:
    """Mean over replications with a Student-t confidence interval per numeric metric.

    Adds ``<key>_ci95_low`` / ``<key>_ci95_high`` for every float metric; counts (``requests_*``, a request
    class's ``class__<name>__requests``) are summed; ``unstable`` and ``overloaded`` are true if true in
    any replication, other flags if true in every one.
    """
    from scipy import stats as sps

    if len(runs) == 1:
        out = dict(runs[0])
        out["replications"] = 1
        return out
    out: dict[str, float | int | bool] = {"replications": len(runs)}
    t = float(sps.t.ppf(0.5 + level / 2, len(runs) - 1))
    for key in runs[0]:
        values = [r[key] for r in runs]
        if isinstance(values[0], bool):
            out[key] = any(values) if key in ("unstable", "overloaded") else all(values)
        elif isinstance(values[0], int) and (key.startswith(("requests_", "backlog_at")) or key.endswith("__requests")):
            out[key] = int(max(values)) if key.startswith("backlog_at") else int(sum(values))
        else:
            arr = np.asarray(values, dtype=float)
            finite = arr[np.isfinite(arr)]
            if finite.size == 0:
                out[key] = math.nan
                continue
            mean = float(finite.mean())
            half = t * float(finite.std(ddof=1)) / math.sqrt(finite.size) if finite.size > 1 else math.nan
            out[key] = mean
            out[f"{key}_ci95_low"] = mean - half
            out[f"{key}_ci95_high"] = mean + half
    return out
