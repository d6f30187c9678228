"""Token-level metrics as pure functions of a run's tables (``requests`` with token columns, the
``batches`` table of iterations, ``replicas``): TTFT, TPOT and end-to-end percentiles, token throughput,
goodput under a TTFT + TPOT objective, KV-cache utilisation and preemptions.

Measured, as for request-level runs (``sim.results.metrics``), over requests arriving in
``[warmup_s, horizon_s)``; token rates count iterations ending in that window.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.results.records import SERVED, outcome_codes

PERCENTILES = (50, 90, 99)
LATENCIES = ("ttft", "tpot", "e2e")


def percentile_stats(name: str, values: np.ndarray) -> dict[str, float]:
    """``{name}_mean_s`` and ``{name}_p50_s`` / ``_p90_s`` / ``_p99_s`` of finite ``values`` (NaN when none)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {f"{name}_mean_s": math.nan, **{f"{name}_p{q}_s": math.nan for q in PERCENTILES}}
    qs = np.percentile(values, PERCENTILES)
    return {f"{name}_mean_s": float(values.mean()), **{f"{name}_p{q}_s": float(v) for q, v in zip(PERCENTILES, qs)}}


def kv_utilization(iterations: pd.DataFrame, replicas: pd.DataFrame, t0: float, t1: float) -> float:
    """Time-average share of the KV blocks in use over the replicas' ready time in [t0, t1) (an idle
    replica holds none), each replica's time weighted by its blocks (``replicas["kv_blocks"]``)."""
    ready = np.clip(np.minimum(replicas["gone_s"].to_numpy(), t1) - np.maximum(replicas["ready_s"].to_numpy(), t0),
                    0, None)
    capacity = float((ready * replicas["kv_blocks"].to_numpy()).sum())
    if capacity <= 0:
        return math.nan
    start, end = iterations["start_s"].to_numpy(), iterations["end_s"].to_numpy()
    overlap = np.clip(np.minimum(end, t1) - np.maximum(start, t0), 0, None)
    return float((iterations["kv_blocks_used"].to_numpy() * overlap).sum() / capacity)


def token_summary(requests: pd.DataFrame, iterations: pd.DataFrame, replicas: pd.DataFrame, *, warmup_s: float,
                  horizon_s: float, ttft_slo_s: float, tpot_slo_s: float, slo_percentile: float,
                  unstable: bool) -> dict[str, float | int | bool]:
    """The token-level keys of summary.json (docs/results.md); percentiles are NaN when ``unstable``. KV shares
    are of each iteration's own replica's blocks (``replicas["kv_blocks"]``)."""
    window = horizon_s - warmup_s
    arr = requests["arrival_s"].to_numpy()
    inside = (arr >= warmup_s) & (arr < horizon_s)
    served = inside & (outcome_codes(requests) == SERVED)
    ttft = requests["ttft_s"].to_numpy()[served]
    tpot = requests["tpot_s"].to_numpy()[served]
    e2e = requests["latency_s"].to_numpy()[served]
    good = (ttft <= ttft_slo_s) & ~(tpot > tpot_slo_s)  # one output token: no TPOT to miss
    ends = iterations["end_s"].to_numpy()
    done = (ends >= warmup_s) & (ends < horizon_s)
    blocks = iterations["replica"].map(dict(zip(replicas["replica"], replicas["kv_blocks"]))).to_numpy(float)
    used_share = iterations["kv_blocks_used"].to_numpy() / blocks
    out: dict[str, float | int | bool] = {}
    for name, values in zip(LATENCIES, (ttft, tpot, e2e)):
        out.update(percentile_stats(name, values))
    slo = {}
    for name, values in (("ttft", ttft), ("tpot", tpot)):
        finite = values[np.isfinite(values)]
        slo[name] = float(np.percentile(finite, slo_percentile)) if finite.size else math.nan
        out[f"{name}_p{slo_percentile:g}_slo_s"] = slo[name]
    n_total = int(inside.sum())
    out.update({
        "goodput_rps": int(good.sum()) / window if window > 0 else math.nan,
        "goodput_share": int(good.sum()) / n_total if n_total else math.nan,
        "slo_met": bool(served.any() and slo["ttft"] <= ttft_slo_s and not slo["tpot"] > tpot_slo_s),
        "output_tokens_per_s": float(iterations["output_tokens"].to_numpy()[done].sum()) / window,
        "prefill_tokens_per_s": float(iterations["prefill_tokens"].to_numpy()[done].sum()) / window,
        "mean_input_tokens": float(requests["input_tokens"].to_numpy()[inside].mean()) if n_total else math.nan,
        "mean_output_tokens": float(requests["output_tokens"].to_numpy()[inside].mean()) if n_total else math.nan,
        "kv_utilization_mean": kv_utilization(iterations, replicas, warmup_s, horizon_s),
        "kv_utilization_peak": float(used_share[done].max()) if done.any() else math.nan,
        "prefix_cache_hit_rate": (float(requests["cached_tokens"].to_numpy()[inside].sum())
                                  / float(requests["input_tokens"].to_numpy()[inside].sum())) if n_total else math.nan,
        "preemptions": int(requests["preemptions"].to_numpy()[inside].sum()),
        "requests_preempted": int((requests["preemptions"].to_numpy()[inside] > 0).sum()),
    })
    if unstable:  # as for request latencies: no steady-state percentile of an unbounded queue
        for name in LATENCIES:
            out.update({k: math.nan for k in percentile_stats(name, np.empty(0))})
        out.update({k: math.nan for k in out if k.endswith("_slo_s")})
        out["slo_met"] = False
    return out


def late_requests(requests: pd.DataFrame, scenario) -> np.ndarray:
    """Per request: not served, or its TTFT or TPOT over its objectives (its class's, ``workload.classes``,
    else ``llm.slo``'s; one output token has no TPOT to miss): what LLM SLO-violation windows count."""
    slo, classes = scenario.llm.slo, scenario.workload.classes
    if classes:
        targets = {c.name: c.objectives(slo) for c in classes}
        names = requests["request_class"].to_numpy()
        ttft_obj = np.array([targets[n][0] for n in names], dtype=float)
        tpot_obj = np.array([targets[n][1] for n in names], dtype=float)
    else:
        ttft_obj, tpot_obj = slo.ttft_s, slo.tpot_s
    ttft, tpot = requests["ttft_s"].to_numpy(), requests["tpot_s"].to_numpy()
    served = outcome_codes(requests) == SERVED
    return ~(served & (ttft <= ttft_obj) & ~(tpot > tpot_obj))
