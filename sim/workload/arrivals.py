"""Arrival processes: each turns its scenario section into sorted arrival times (seconds).

A registry maps the YAML name (``workload.arrivals.process``) to a generator function
``(spec, rng, horizon_s, count, scenario) -> np.ndarray``. Exactly one of ``horizon_s`` (all arrivals
before it) or ``count`` (the first ``count`` arrivals) is given. Gaps are never truncated.
Time-varying rates use Lewis–Shedler thinning of a Poisson process at the peak rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sim.errors import TraceError, shown
from sim.scenario.model import mean_rate_rps

ARRIVALS: dict[str, Callable[..., np.ndarray]] = {}


def register(name: str):
    def wrap(fn):
        ARRIVALS[name] = fn
        return fn

    return wrap


def arrival_times(scenario, rng: np.random.Generator) -> np.ndarray:
    """The scenario's arrival times over its run horizon, sorted ascending."""
    spec = scenario.workload.arrivals
    times = ARRIVALS[spec.process](spec, rng, scenario.run.duration_s, scenario.run.requests, scenario)
    return np.asarray(times, dtype=float)


def _renewal(gap_sampler, mean_gap: float, rng, horizon_s, count) -> np.ndarray:
    """Cumulative sums of i.i.d. gaps, drawn in blocks until the horizon or count is reached."""
    if count is not None:
        return np.cumsum(gap_sampler(rng, count))
    expected = horizon_s / mean_gap
    chunks, total, t = [], 0, 0.0
    while t < horizon_s:
        n = int(expected - total + 6 * math.sqrt(max(expected, 1.0)) + 16)
        block = t + np.cumsum(gap_sampler(rng, n))
        chunks.append(block)
        total += n
        t = block[-1]
    times = np.concatenate(chunks)
    return times[times < horizon_s]


@register("poisson")
def poisson(spec, rng, horizon_s, count, scenario=None) -> np.ndarray:
    scale = 1.0 / spec.rate_rps
    return _renewal(lambda r, n: r.exponential(scale, n), scale, rng, horizon_s, count)


@register("deterministic")
def deterministic(spec, rng, horizon_s, count, scenario=None) -> np.ndarray:
    gap = 1.0 / spec.rate_rps
    n = count if count is not None else int(math.ceil(horizon_s * spec.rate_rps))
    times = gap * np.arange(1, n + 1)
    return times if count is not None else times[times < horizon_s]


@register("gamma")
def gamma(spec, rng, horizon_s, count, scenario=None) -> np.ndarray:
    shape = 1.0 / spec.cv**2
    scale = 1.0 / (spec.rate_rps * shape)
    return _renewal(lambda r, n: r.gamma(shape, scale, n), 1.0 / spec.rate_rps, rng, horizon_s, count)


@register("mmpp")
def mmpp(spec, rng, horizon_s, count, scenario=None) -> np.ndarray:
    """Two-state Markov-modulated Poisson process, started in its stationary state."""
    p_on = spec.mean_on_s / (spec.mean_on_s + spec.mean_off_s)
    on = bool(rng.random() < p_on)
    t, out, n = 0.0, [], 0
    limit = horizon_s if horizon_s is not None else math.inf
    while t < limit and (count is None or n < count):
        stay = rng.exponential(spec.mean_on_s if on else spec.mean_off_s)
        end = min(t + stay, limit)
        rate = spec.rate_on_rps if on else spec.rate_off_rps
        if rate > 0:
            k = rng.poisson(rate * (end - t))
            seg = np.sort(rng.uniform(t, end, k))
            out.append(seg)
            n += k
        t, on = end, not on
    times = np.concatenate(out) if out else np.empty(0)
    return times[:count] if count is not None else times


# ---------------------------------------------------------------- time-varying rates
def rate_function(spec) -> Callable[[np.ndarray], np.ndarray]:
    """λ(t) of a rate-defined process, vectorised; used by thinning and by timelines."""
    p = spec.process
    if p in ("poisson", "deterministic", "gamma"):
        return lambda t: np.full_like(np.asarray(t, float), spec.rate_rps)
    if p == "mmpp":
        mean = (spec.rate_on_rps * spec.mean_on_s + spec.rate_off_rps * spec.mean_off_s) / (
            spec.mean_on_s + spec.mean_off_s
        )
        return lambda t: np.full_like(np.asarray(t, float), mean)
    if p == "steps":
        at = np.array([s.at_s for s in spec.steps])
        rates = np.array([s.rate_rps for s in spec.steps])
        return lambda t: rates[np.searchsorted(at, np.asarray(t, float), side="right") - 1]
    if p == "diurnal":
        w = 2 * math.pi / spec.period_s
        return lambda t: spec.mean_rps * (1 + spec.amplitude * np.cos(w * (np.asarray(t, float) - spec.peak_at_s)))
    if p == "spike":
        return lambda t: _spike_rate(spec, np.asarray(t, float))
    raise ValueError(f"no rate function for {p!r}")


def peak_rate(spec) -> float:
    p = spec.process
    if p == "steps":
        return max(s.rate_rps for s in spec.steps)
    if p == "diurnal":
        return spec.mean_rps * (1 + spec.amplitude)
    if p == "spike":
        return max(spec.base_rps, spec.spike_rps)
    if p == "mmpp":
        return max(spec.rate_on_rps, spec.rate_off_rps)
    return spec.rate_rps


def _spike_rate(spec, t: np.ndarray) -> np.ndarray:
    base, top = spec.base_rps, spec.spike_rps
    up0, top0 = spec.start_s, spec.start_s + spec.ramp_s
    top1, down1 = top0 + spec.duration_s, top0 + spec.duration_s + spec.ramp_s
    rate = np.full_like(t, base)
    if spec.ramp_s > 0:
        rising = (t >= up0) & (t < top0)
        rate[rising] = base + (top - base) * (t[rising] - up0) / spec.ramp_s
        falling = (t >= top1) & (t < down1)
        rate[falling] = top - (top - base) * (t[falling] - top1) / spec.ramp_s
    rate[(t >= top0) & (t < top1)] = top
    return rate


def expected_count(scenario) -> float:
    """About how many arrivals a run draws: exact for ``run.requests``, the rate integrated over the
    horizon for rate-defined processes, NaN for a trace (bounded by its file)."""
    run, spec = scenario.run, scenario.workload.arrivals
    if run.requests is not None:
        return float(run.requests)
    horizon, p = run.duration_s, spec.process
    if p == "trace":
        return math.nan
    if p == "steps":
        at = [s.at_s for s in spec.steps] + [math.inf]
        return sum(s.rate_rps * max(0.0, min(b, horizon) - a) for s, a, b in zip(spec.steps, at, at[1:]))
    if p == "diurnal":
        w = 2 * math.pi / spec.period_s
        swing = (math.sin(w * (horizon - spec.peak_at_s)) + math.sin(w * spec.peak_at_s)) / w
        return spec.mean_rps * (horizon + spec.amplitude * swing)
    if p == "spike":  # piecewise linear: the trapezoid rule is exact between its corners
        corners = [spec.start_s, spec.start_s + spec.ramp_s, spec.start_s + spec.ramp_s + spec.duration_s,
                   spec.start_s + 2 * spec.ramp_s + spec.duration_s]
        points = np.array(sorted({0.0, horizon, *(c for c in corners if 0 < c < horizon)}))
        rate = _spike_rate(spec, points)
        return float(np.sum((rate[1:] + rate[:-1]) / 2 * np.diff(points)))
    return mean_rate_rps(spec) * horizon  # constant-rate processes and MMPP (in its stationary state)


def _thinned(spec, rng, horizon_s, count) -> np.ndarray:
    lam = rate_function(spec)
    peak = peak_rate(spec)
    chunks, n, t0 = [], 0, 0.0
    limit = horizon_s if horizon_s is not None else math.inf
    block = 4096 if horizon_s is None else int(peak * horizon_s + 6 * math.sqrt(peak * horizon_s) + 16)
    block = min(max(block, 256), 1 << 22)
    while t0 < limit and (count is None or n < count):
        cand = t0 + np.cumsum(rng.exponential(1.0 / peak, block))
        keep = cand[rng.random(block) * peak < lam(cand)]
        chunks.append(keep)
        n += keep.size
        t0 = cand[-1]
    times = np.concatenate(chunks) if chunks else np.empty(0)
    return times[:count] if count is not None else times[times < limit]


for _name in ("steps", "diurnal", "spike"):
    register(_name)(lambda spec, rng, horizon_s, count, scenario=None: _thinned(spec, rng, horizon_s, count))


# ---------------------------------------------------------------- trace replay
@register("trace")
def trace(spec, rng, horizon_s, count, scenario=None) -> np.ndarray:
    path = scenario.resolve(spec.path) if scenario is not None else Path(spec.path)
    key = "workload.arrivals.path"
    times = read_trace(path, spec.column, key=key) * spec.time_scale
    if horizon_s is not None:
        first = times[0]
        times = times[times < horizon_s]
        if times.size == 0:
            raise TraceError(f"{key} = {str(path)!r}: no arrival before run.duration_s = {horizon_s} "
                             f"(the first is at {first:g} s after time_scale)")
    return times[:count] if count is not None else times


def read_trace(path: Path, column: str = "arrival_s", key: str | None = None,
               max_bytes: int = 256 * 2**20) -> np.ndarray:
    """Arrival times from a CSV or Parquet file; errors name the file, column and first bad row.

    ``key`` (e.g. ``workload.arrivals.path``) is the scenario key the file came from; messages then
    read ``key = 'file': problem``, else ``file: problem``. A file over ``max_bytes`` is refused
    unread. Messages never echo the file beyond one value cut short (``sim.errors.shown``): the path
    may point anywhere readable, and the header is listed only if it looks like column names.
    """
    where = f"{key} = {str(path)!r}" if key else str(path)
    frame = read_table(path, where, "trace", max_bytes)
    values = finite_column(frame, column, where, TraceError, "set workload.arrivals.column",
                           "a trace needs at least one arrival")
    if values.min() < 0:
        row = int(np.argmin(values))
        raise TraceError(f"{where}: {column} in row {row + 1} is {values[row]:g}; times must be ≥ 0 seconds")
    unsorted = np.flatnonzero(np.diff(values) < 0)
    if unsorted.size:
        r = unsorted[0]
        raise TraceError(
            f"{where}: {column} is not sorted: row {r + 2} ({values[r + 1]:g}) comes before row {r + 1} "
            f"({values[r]:g}); sort the trace by arrival time"
        )
    return values


def read_table(path: Path, where: str, what: str = "trace", max_bytes: int = 256 * 2**20, error=TraceError):
    """A CSV or Parquet file (by suffix: .parquet / .pq, else CSV) as a DataFrame, refusing one over
    ``max_bytes`` unread; ``what`` names the file's kind in the one-line ``error``s."""
    import io

    import pandas as pd

    if not path.is_file():
        raise error(f"{where}: {what} file not found")
    try:
        with path.open("rb") as f:  # bounded also where the size reads 0 (/proc) or the file grows
            data = f.read(max_bytes + 1) if path.stat().st_size <= max_bytes else None
    except OSError as exc:
        raise error(f"{where}: cannot read the {what} ({exc.strerror or type(exc).__name__})") from None
    if data is None or len(data) > max_bytes:
        raise error(f"{where}: larger than {max_bytes / 2**20:g} MiB, the most a {what} may hold")
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        return pd.read_parquet(io.BytesIO(data)) if parquet else pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        detail = " ".join(str(exc).split())  # one line
        detail = detail if len(detail) <= 100 else detail[:97] + "..."
        raise error(f"{where}: cannot read as {'Parquet' if parquet else 'CSV'}: {detail}") from None


def finite_column(frame, column: str, where: str, error=TraceError, hint: str = "",
                  empty: str = "at least one row is needed", values_are: str = "times") -> np.ndarray:
    """``frame[column]`` as finite floats; a missing column, an empty one or the first value that is not a
    finite number is one ``error`` line naming the column and row (``hint`` says how to name another column)."""
    import re

    import pandas as pd

    if column not in frame.columns:
        names = [str(c) for c in frame.columns]
        listed = "columns: " + (", ".join(names) or "none")
        if len(names) > 20 or not all(re.fullmatch(r"[\w .()/%-]{1,40}", n) for n in names):
            listed = "its first row is not a header of column names"
        elif len(listed) > 70:
            listed = listed[:67] + "..."
        raise error(f"{where}: no column {shown(column)} ({listed})" + (f"; {hint}" if hint else ""))
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    if values.size == 0:
        raise error(f"{where}: column {column!r} is empty; {empty}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raw = frame[column].iloc[bad[0]]
        raw = raw.item() if hasattr(raw, "item") else raw
        raise error(f"{where}: {column} in row {bad[0] + 1} is {shown(raw)}; {values_are} must be finite numbers")
    return values
