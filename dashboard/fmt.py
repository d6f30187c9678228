"""Numbers as people read them: every value with its unit, missing values as a dash."""

from __future__ import annotations

import math

DASH = "—"


def _ok(x) -> bool:
    return x is not None and not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def ms(seconds) -> str:
    """Seconds shown in milliseconds (µs below 0.1 ms, s above 10 s)."""
    if not _ok(seconds):
        return DASH
    if abs(seconds) >= 10:
        return f"{seconds:,.2f} s"
    if 0 < abs(seconds) < 1e-4:
        return f"{seconds * 1e6:,.1f} µs"
    return f"{seconds * 1e3:,.3g} ms" if abs(seconds) < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def usd(x, per: str = "") -> str:
    if not _ok(x):
        return DASH
    text = f"${x:.3g}" if 0 < abs(x) < 1 else f"${x:,.2f}"
    return text + per


def rps(x) -> str:
    return f"{x:,.0f} req/s" if _ok(x) and abs(x) >= 100 else (f"{x:,.1f} req/s" if _ok(x) else DASH)


def pct(fraction, digits: int = 2) -> str:
    if not _ok(fraction):
        return DASH
    text = f"{fraction * 100:,.{digits}f}"
    return "100 %" if float(text) == 100 else f"{text} %"


def count(x, unit: str = "") -> str:
    if not _ok(x):
        return DASH
    text = f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"
    if x == 1 and unit.endswith("s") and not unit.endswith("/s"):
        unit = unit[:-1]
    return f"{text} {unit}".rstrip()


def compact(x, unit: str = "") -> str:
    """A large count short enough for a metric card: 682,347 -> "682k", 1,250,000 -> "1.25M"; below
    10,000 as :func:`count` gives it."""
    if not _ok(x) or abs(x) < 10_000:
        return count(x, unit)
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size * 0.9995:  # what rounds up to 1000k reads 1M
            return f"{x / size:.3g}{suffix} {unit}".rstrip()
    return count(x, unit)


def nbytes(x) -> str:
    if not _ok(x):
        return DASH
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= size:
            return f"{x / size:,.1f} {unit}"
    return f"{x:,.0f} B"


def delta_pct(new, old) -> str | None:
    """Relative change as a signed percentage, None when not comparable (for st.metric deltas)."""
    if not (_ok(new) and _ok(old)) or old == 0:
        return None
    change = (new - old) / abs(old) * 100
    return f"{change:+.1f} %" if abs(change) >= 0.05 else "0.0 %"


# Rows of the baseline-vs-candidate table: (summary key, label, formatter).
SUMMARY_ROWS = (
    ("offered_rps", "offered load", rps),
    ("throughput_rps", "throughput", rps),
    ("latency_p50_s", "latency p50", ms),
    ("latency_p95_s", "latency p95", ms),
    ("latency_p99_s", "latency p99", ms),
    ("latency_p999_s", "latency p99.9", ms),
    ("goodput_share", "within SLO", pct),
    ("requests_rejected", "rejected (queue full)", lambda x: count(x, "requests")),
    ("requests_timed_out", "timed out", lambda x: count(x, "requests")),
    ("mean_batch_size", "mean batch size", lambda x: count(x, "req/batch")),
    ("utilization", "utilisation", lambda x: pct(x, 1)),
    ("replicas_mean", "replicas (mean)", lambda x: count(x, "replicas")),
    ("capacity_rps", "fleet capacity", rps),
    ("cost_per_hour_usd", "cost per hour", lambda x: usd(x, "/h")),
    ("cost_per_million_requests_usd", "cost per 1M requests", lambda x: usd(x, " /1M req")),
)
