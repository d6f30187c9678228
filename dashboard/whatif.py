"""Pure computations behind the what-if dashboard (no streamlit here).

Turning a few user-level knobs into scenario updates (arrival patterns), condensing a run into what
a page plots (latency CDF, windowed percentiles over time), the queueing-theory reference curves
(the M/M/1 sojourn ``1/(mu - lambda)`` and M/M/c with Erlang C), small sweeps over batching
settings, and what a profile says per batch size. Every function is a function of its arguments;
the dashboard caches them on hashable inputs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import CapsimError, ScenarioError
from sim.experiments.sweep import evaluate_or_error, run_scenarios
from sim.scenario.keys import updated
from sim.scenario.load import dump_scenario
from sim.scenario.model import Scenario
from sim.theory import queueing
from sim.workload.arrivals import expected_count

PATTERNS = ("poisson", "mmpp", "diurnal", "spike", "trace")
PATTERN_LABELS = {"poisson": "Poisson (steady)", "mmpp": "bursty (MMPP on/off)", "diurnal": "diurnal cycle",
                  "spike": "spike", "trace": "trace CSV"}
MAX_DASHBOARD_REQUESTS = 1_000_000


# ---------------------------------------------------------------- scenarios as text
def scenario_key(scenario: Scenario) -> str:
    """A short stable id of a scenario's content (for widget keys and cache keys)."""
    return hashlib.sha1((dump_scenario(scenario) + scenario.base_dir).encode()).hexdigest()[:12]


def check_size(scenario: Scenario, limit: int = MAX_DASHBOARD_REQUESTS) -> None:
    """Refuse runs too large for an interactive page, naming what to lower."""
    n = expected_count(scenario)
    if math.isfinite(n) and n > limit:
        raise ScenarioError(f"this run would simulate about {n:,.0f} requests; the dashboard allows "
                            f"{limit:,}: lower run.duration_s or the arrival rate")


def shortened(scenario: Scenario, max_requests: int) -> Scenario:
    """The scenario with its horizon cut so that about ``max_requests`` arrive (sweeps stay fast)."""
    n = expected_count(scenario)
    run = scenario.run
    if not math.isfinite(n) or n <= max_requests or run.duration_s is None:
        return scenario
    factor = max_requests / n
    return updated(scenario, {"run.duration_s": run.duration_s * factor,
                                  "run.warmup_s": run.warmup_s * factor})


# ---------------------------------------------------------------- arrival patterns
def arrivals_for(pattern: str, rate_rps: float, duration_s: float, *, burst_ratio: float = 4.0,
                 mean_on_s: float = 5.0, mean_off_s: float = 15.0, amplitude: float = 0.6,
                 spike_factor: float = 3.0, trace_path: str | None = None, trace_column: str = "arrival_s",
                 time_scale: float = 1.0) -> dict[str, Any]:
    """A ``workload.arrivals`` mapping for one of :data:`PATTERNS` with mean (or base) rate ``rate_rps``.

    mmpp: the on rate is ``burst_ratio`` times the off rate, chosen so the long-run mean is
    ``rate_rps``. diurnal: one full cycle over the run, peak in the middle. spike: ``spike_factor``
    times the base rate from 40% to 60% of the run, with 5% ramps either side.
    """
    if pattern == "poisson":
        return {"process": "poisson", "rate_rps": rate_rps}
    if pattern == "mmpp":
        off = rate_rps * (mean_on_s + mean_off_s) / (burst_ratio * mean_on_s + mean_off_s)
        return {"process": "mmpp", "rate_on_rps": burst_ratio * off, "rate_off_rps": off,
                "mean_on_s": mean_on_s, "mean_off_s": mean_off_s}
    if pattern == "diurnal":
        return {"process": "diurnal", "mean_rps": rate_rps, "amplitude": amplitude, "period_s": duration_s,
                "peak_at_s": duration_s / 2}
    if pattern == "spike":
        return {"process": "spike", "base_rps": rate_rps, "spike_rps": rate_rps * spike_factor,
                "start_s": 0.35 * duration_s, "duration_s": 0.2 * duration_s, "ramp_s": 0.05 * duration_s}
    if pattern == "trace":
        if not trace_path:
            raise ScenarioError("workload.arrivals: pattern 'trace' needs an uploaded trace CSV")
        return {"process": "trace", "path": trace_path, "column": trace_column, "time_scale": time_scale}
    raise ScenarioError(f"pattern = {pattern!r}: must be one of {', '.join(PATTERNS)}")


SPIKE_TIMING = ("start_s", "duration_s", "ramp_s")
TIMING = {"diurnal": ("period_s", "peak_at_s"), "spike": SPIKE_TIMING}


def keep_timing(loaded: dict[str, Any], built: dict[str, Any], stretch: float = 1.0) -> dict[str, Any]:
    """``built`` arrivals with the timing (period, spike start...) of the ``loaded`` arrivals of the same
    process, times ``stretch`` (a run ``stretch`` times as long keeps the same shape)."""
    if loaded.get("process") == built["process"]:
        built = {**built, **{k: loaded[k] * stretch for k in TIMING.get(built["process"], ())}}
    return built


def default_spike_factor(scenario: Scenario, rate_rps: float, capacity_rps: float, overload: float = 1.5,
                         limit: int = MAX_DASHBOARD_REQUESTS) -> float:
    """Spike height (× ``rate_rps``) of the :func:`arrivals_for` spike over the scenario's run that takes
    the traffic to ``overload`` × ``capacity_rps``; lower where that run would pass ``limit`` requests.
    A multiple of 0.5, at least 1."""
    duration = scenario.run.duration_s

    def count(factor: float) -> float:
        spike = arrivals_for("spike", rate_rps, duration, spike_factor=factor)
        return expected_count(updated(scenario, {"workload.arrivals": spike, "run.requests": None}))

    wanted = overload * capacity_rps / rate_rps
    at_one, per_unit = count(1.0), count(2.0) - count(1.0)  # the count grows linearly with the height
    room = 1.0 + (limit - at_one) / per_unit if per_unit > 0 else wanted
    return max(1.0, math.floor(2.0 * min(wanted, room)) / 2.0)


def parse_sizes(text: str, max_batch_size: int) -> list[int]:
    """``"8, 16 32"`` -> [8, 16, 32]; every size must be an integer in 1..max_batch_size."""
    sizes: list[int] = []
    for token in text.replace(",", " ").split():
        if not token.isdigit() or not 1 <= int(token) <= max_batch_size:
            raise ScenarioError(f"batching.preferred_batch_sizes: {token!r} is not an integer in "
                                f"1..{max_batch_size} (the max batch size)")
        sizes.append(int(token))
    return sorted(set(sizes))


# ---------------------------------------------------------------- condensing a run
def measured(requests: pd.DataFrame, warmup_s: float, horizon_s: float) -> pd.DataFrame:
    """Requests arriving inside the measurement window ``[warmup_s, horizon_s)``."""
    arr = requests["arrival_s"].to_numpy()
    return requests[(arr >= warmup_s) & (arr < horizon_s)]


def served_latency_s(requests: pd.DataFrame) -> np.ndarray:
    return requests["latency_s"].to_numpy()[requests["outcome"].to_numpy() == "served"]


def latency_cdf(latency_s: np.ndarray, points: int = 240) -> pd.DataFrame:
    """The empirical CDF at ``points`` probabilities, dense in the tail (up to p99.99)."""
    if latency_s.size == 0:
        return pd.DataFrame({"latency_s": [], "fraction": []})
    body = np.linspace(0.0, 0.9, points // 2, endpoint=False)
    tail = 1.0 - np.logspace(-1, -4, points - points // 2)
    probs = np.concatenate([body, tail, [1.0]])
    return pd.DataFrame({"latency_s": np.quantile(latency_s, probs), "fraction": probs})


def windowed_latency(requests: pd.DataFrame, window_s: float, horizon_s: float) -> pd.DataFrame:
    """Per window of arrival time: arrivals/s, p50 and p99 latency of served requests, drops."""
    edges = np.arange(0.0, horizon_s + window_s, window_s)
    arr = requests["arrival_s"].to_numpy()
    idx = np.clip(np.searchsorted(edges, arr, side="right") - 1, 0, len(edges) - 2)
    served = requests["outcome"].to_numpy() == "served"
    n = len(edges) - 1
    counts = np.bincount(idx, minlength=n)[:n]
    dropped = np.bincount(idx[~served], minlength=n)[:n]
    lat = pd.Series(requests["latency_s"].to_numpy()[served]).groupby(idx[served])
    q = lat.quantile([0.5, 0.99]).unstack() if served.any() else pd.DataFrame(columns=[0.5, 0.99])
    q = q.reindex(range(n))
    return pd.DataFrame({
        "time_s": edges[:-1] + window_s / 2,
        "arrival_rate_rps": counts / window_s,
        "dropped_rps": dropped / window_s,
        "latency_p50_s": q[0.5].to_numpy(dtype=float),
        "latency_p99_s": q[0.99].to_numpy(dtype=float),
    })


def timeline_window_s(horizon_s: float, windows: int = 120) -> float:
    """A round window length giving about ``windows`` windows over the horizon."""
    raw = horizon_s / windows
    step = 10 ** math.floor(math.log10(raw))
    return float(min((m * step for m in (1, 2, 5, 10) if m * step >= raw), default=10 * step))


# ---------------------------------------------------------------- cost
def cost_per_million_usd(usd_per_hour: float, throughput_rps: float) -> float:
    """Dollars per million served requests for a fleet costing ``usd_per_hour`` at ``throughput_rps``."""
    if not throughput_rps > 0:
        return math.nan
    return usd_per_hour / (throughput_rps * 3600.0) * 1e6


# ---------------------------------------------------------------- queueing theory
def _inf_when_unstable(formula: Callable[..., float]) -> Callable[..., float]:
    """``sim.theory.queueing`` raises ValueError for an unstable queue; a chart reads that as infinite."""
    def call(*args: float) -> float:
        try:
            return float(formula(*args))
        except ValueError:
            return math.inf
    return call


MEAN_SOJOURN_S = {"mm1": _inf_when_unstable(queueing.mm1_mean_sojourn_s),
                  "mmc": _inf_when_unstable(queueing.mmc_mean_sojourn_s),
                  "md1": _inf_when_unstable(lambda lam, s: queueing.md1_mean_wait_s(lam, s) + s)}


def theory_curve(service_rps: float, servers: int, rates_rps: Iterable[float]) -> pd.DataFrame:
    """Mean latency vs offered load: M/M/1 and M/D/1 per replica (load split evenly), M/M/c."""
    f = MEAN_SOJOURN_S
    rows = [{"offered_rps": lam, "mm1_split_s": f["mm1"](lam / servers, service_rps),
             "md1_split_s": f["md1"](lam / servers, 1.0 / service_rps),
             "mmc_s": f["mmc"](lam, service_rps, servers)} for lam in rates_rps]
    return pd.DataFrame(rows).replace([math.inf], math.nan)


def service_rate_rps(scenario: Scenario) -> float:
    """mu: requests/s one instance serves running batches of one back to back."""
    from sim.serving.service import build_service

    return 1.0 / build_service(scenario, np.random.default_rng(0)).mean_s(1)


def theory_vs_sim(scenario: Scenario, loads: Iterable[float], seed: int, max_requests: int
                  ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Mean latency vs offered load (``loads`` as fractions of c*mu): formulas beside two simulations,
    one without batching (max batch 1) and one with the scenario's batching. Poisson arrivals, a
    static fleet, no queue limit or timeout, so the simulation describes the queue theory describes.
    """
    mu = service_rate_rps(scenario)
    servers = scenario.fleet.replicas * scenario.fleet.instances_per_replica
    rates = [float(x) * servers * mu for x in loads]
    frame = theory_curve(mu, servers, rates)
    frame.insert(1, "load", list(loads))
    common: dict[str, Any] = {"batching.max_queue_size": 0, "batching.timeout_s": None,
                              "autoscaler": {"type": "static"}}
    unbatched = {"batching.max_batch_size": 1, "batching.preferred_batch_sizes": [],
                 "batching.max_queue_delay_s": 0.0}
    points = []
    for lam in rates:
        duration = max_requests / lam
        point = {**common, "workload.arrivals": {"process": "poisson", "rate_rps": lam},
                 "run.duration_s": duration, "run.warmup_s": 0.1 * duration, "run.requests": None}
        points += [{**point, **unbatched}, point]
    rows = sweep(scenario, points, seed)
    ok = (rows["error"] == "") & ~rows["unstable"].fillna(True).astype(bool)
    mean = rows["latency_mean_s"].where(ok).to_numpy(dtype=float)
    frame["sim_batch1_s"], frame["sim_batched_s"] = mean[0::2], mean[1::2]
    info = {"service_rps": mu, "servers": servers, "source": "sim.theory.queueing",
            "max_batch_size": scenario.batching.max_batch_size}
    return frame, info


# ---------------------------------------------------------------- sweeps
def sweep(scenario: Scenario, updates: list[dict[str, Any]], seed: int,
          metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One replication of the scenario per updates dict (same seed, so the same traffic), through the
    simulator's loop over many scenarios; one row per updates dict, with ``error`` ("" when it ran) and the
    summary figures ``metrics`` (default :data:`SWEEP_METRICS`)."""
    labelled, rows = [], []
    for i, upd in enumerate(updates):
        try:
            labelled.append(({"_row": i}, updated(scenario, upd, "--param")))
        except CapsimError as exc:
            rows.append({"_row": i, "error": str(exc)})
    result = run_scenarios(labelled, ["_row"], replications=1, seed=seed, progress=False,
                           evaluate_fn=evaluate_or_error)
    for r in result.records:
        row = {"_row": r["_row"], "error": r.get("error", "")}
        if not row["error"]:
            row.update({k: r[k] for k in metrics or SWEEP_METRICS})
            row["cost_per_million_at_capacity_usd"] = cost_per_million_usd(r["cost_per_hour_usd"], r["capacity_rps"])
        rows.append(row)
    frame = pd.DataFrame(sorted(rows, key=lambda row: row["_row"]))
    params = pd.DataFrame(updates, index=frame.index)
    return pd.concat([params, frame.drop(columns="_row")], axis=1)


SWEEP_METRICS = ("latency_p50_s", "latency_p99_s", "latency_mean_s", "throughput_rps", "goodput_share",
                 "cost_per_million_requests_usd", "cost_per_hour_usd", "utilization", "mean_batch_size", "unstable",
                 "latency_p99_observed_s", "capacity_rps")


def batching_grid_updates(max_batch_sizes: Iterable[int], queue_delays_s: Iterable[float]) -> list[dict]:
    return [{"batching.max_batch_size": int(b), "batching.max_queue_delay_s": float(d),
             "batching.preferred_batch_sizes": []} for b in max_batch_sizes for d in queue_delays_s]


# ---------------------------------------------------------------- profiles
def profile_table(profile) -> pd.DataFrame:
    """Per measured batch size: latency, throughput, per-request time, first call, memory, gain."""
    rows = []
    for b in profile.batch_sizes:
        mean_s = profile.mean_service_s(b)
        thr = b / mean_s
        lat = profile.latency_s[b]
        rows.append({
            "batch_size": b,
            "latency_p50_s": float(np.median(lat)),
            "latency_p99_s": float(np.quantile(lat, 0.99)),
            "service_mean_s": mean_s,
            "throughput_rps": thr,
            "time_per_request_s": mean_s / b,
            "first_call_s": profile.first_call_s.get(b, math.nan),
            "first_call_extra_s": profile.first_call_extra_s(b) if b in profile.first_call_s else math.nan,
            "peak_memory_bytes": profile.peak_memory_bytes.get(b) or math.nan,
        })
    frame = pd.DataFrame(rows)
    first = frame.iloc[0]
    frame["throughput_gain"] = frame["throughput_rps"] / first["throughput_rps"]
    # Share of a replica's busy time per request saved against the smallest measured batch.
    frame["busy_time_saved"] = 1.0 - frame["time_per_request_s"] / first["time_per_request_s"]
    return frame
