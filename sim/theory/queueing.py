"""Closed-form queueing results the simulator is checked against (and the planner starts from).

Notation: ``lam`` is the arrival rate λ (requests/s), ``mu`` the service rate μ of one server
(requests/s, so the mean service time is 1/μ), ``c`` the number of servers, ρ = λ/(cμ) the load.
Times are in seconds, percentiles in percent (99 = p99). Every function raises ``ValueError`` for an
unstable system (ρ ≥ 1) or a meaningless input instead of returning a negative or infinite figure.

Formulas (Kleinrock, *Queueing Systems* vol. 1; Gross & Harris, *Fundamentals of Queueing Theory*):

* M/M/1: sojourn T ~ Exp(μ − λ), so E[T] = 1/(μ − λ), E[W] = ρ/(μ − λ),
  and the p-th percentile of T is −ln(1 − p/100)/(μ − λ).
* M/M/c: Erlang C, C(c, a) with a = λ/μ, is the probability an arrival waits.
  E[W] = C/(cμ − λ); P(W > t) = C·e^{−(cμ−λ)t}.
* M/G/1 (Pollaczek–Khinchine): E[W] = λE[S²] / (2(1 − ρ)); M/D/1 is E[S²] = S², i.e.
  E[W] = ρS / (2(1 − ρ)).
* Little's law: L = λW for any stable system, whatever the discipline.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = [
    "batching_capacity_rps", "erlang_c", "little_law", "md1_mean_wait_s", "mg1_mean_wait_s",
    "mm1_mean_sojourn_s", "mm1_mean_wait_s", "mm1_sojourn_percentile_s", "mmc_mean_sojourn_s",
    "mmc_mean_wait_s", "mmc_min_servers", "mmc_wait_percentile_s", "mmc_wait_tail", "seed_latency_s",
]


# ---------------------------------------------------------------- checks
def _rates(lam: float, mu: float, c: int = 1) -> float:
    """ρ = λ/(cμ), after checking the inputs describe a stable queue."""
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"arrival rate lam = {lam!r}: must be a finite number >= 0")
    if not (math.isfinite(mu) and mu > 0):
        raise ValueError(f"service rate mu = {mu!r}: must be a finite number > 0")
    if isinstance(c, bool) or int(c) != c or c < 1:
        raise ValueError(f"servers c = {c!r}: must be an integer >= 1")
    rho = lam / (c * mu)
    if rho >= 1:
        raise ValueError(f"unstable: load rho = lam/(c*mu) = {lam:g}/({c}*{mu:g}) = {rho:.4g} >= 1; "
                         "the queue grows without bound and has no steady state")
    return rho


def _fraction(percentile: float) -> float:
    if not 0 < percentile < 100:
        raise ValueError(f"percentile = {percentile!r}: must lie strictly between 0 and 100 (99 = p99)")
    return percentile / 100.0


# ---------------------------------------------------------------- M/M/1
def mm1_mean_sojourn_s(lam: float, mu: float) -> float:
    """Mean time in system (wait + service) of M/M/1: 1/(μ − λ)."""
    _rates(lam, mu)
    return 1.0 / (mu - lam)


def mm1_mean_wait_s(lam: float, mu: float) -> float:
    """Mean time in queue of M/M/1: ρ/(μ − λ)."""
    rho = _rates(lam, mu)
    return rho / (mu - lam)


def mm1_sojourn_percentile_s(lam: float, mu: float, percentile: float) -> float:
    """Percentile of the M/M/1 sojourn time, which is exponential with rate μ − λ."""
    _rates(lam, mu)
    return -math.log1p(-_fraction(percentile)) / (mu - lam)


def seed_latency_s(lam: float, mu: float) -> float:
    """The seed note's "L = 1/(μ − λ)": the mean latency of a *single* M/M/1 server.

    It is exactly :func:`mm1_mean_sojourn_s` (the note's L is a latency, not Little's L, which is
    the mean number in system ρ/(1 − ρ)). Two caveats the note leaves out: it holds for one server
    with exponential service only (for c servers use :func:`mmc_mean_sojourn_s`, not μ = c·μ₁), and it
    grows hyperbolically, not exponentially, as λ → μ.
    """
    return mm1_mean_sojourn_s(lam, mu)


# ---------------------------------------------------------------- M/M/c
def erlang_c(lam: float, mu: float, c: int) -> float:
    """Probability an arrival has to wait in M/M/c (Erlang C), by the stable Erlang B recursion.

    B(0) = 1, B(k) = a·B(k−1) / (k + a·B(k−1)) with a = λ/μ; then C = cB / (c − a(1 − B)).
    """
    rho = _rates(lam, mu, c)
    a = lam / mu
    b = 1.0
    for k in range(1, int(c) + 1):
        b = a * b / (k + a * b)
    return b / (1.0 - rho * (1.0 - b))


def mmc_mean_wait_s(lam: float, mu: float, c: int) -> float:
    """Mean time in queue of M/M/c: C(c, a) / (cμ − λ)."""
    return erlang_c(lam, mu, c) / (c * mu - lam)


def mmc_mean_sojourn_s(lam: float, mu: float, c: int) -> float:
    """Mean time in system of M/M/c: E[W] + 1/μ."""
    return mmc_mean_wait_s(lam, mu, c) + 1.0 / mu


def mmc_wait_tail(lam: float, mu: float, c: int, t_s: float | np.ndarray) -> float | np.ndarray:
    """P(W > t) = C·e^{−(cμ−λ)t} for t ≥ 0 (W is the time in queue)."""
    t = np.asarray(t_s, dtype=float)
    if np.any(t < 0):
        raise ValueError(f"t_s = {t_s!r}: waiting times are >= 0")
    tail = erlang_c(lam, mu, c) * np.exp(-(c * mu - lam) * t)
    return float(tail) if tail.ndim == 0 else tail


def mmc_wait_percentile_s(lam: float, mu: float, c: int, percentile: float) -> float:
    """The p-th percentile of the M/M/c wait: 0 if P(wait) ≤ 1 − p, else ln(C/(1 − p)) / (cμ − λ)."""
    q = 1.0 - _fraction(percentile)
    prob_wait = erlang_c(lam, mu, c)
    return 0.0 if prob_wait <= q else math.log(prob_wait / q) / (c * mu - lam)


def mmc_min_servers(lam: float, mu: float, *, wait_s: float | None = None, percentile: float | None = None,
                    mean_wait_s: float | None = None, max_servers: int = 100_000) -> int:
    """The fewest servers c for which M/M/c meets the targets given.

    ``wait_s`` with ``percentile``: the p-th percentile of the wait is ≤ ``wait_s`` (e.g. p99 wait ≤ 5 ms).
    ``mean_wait_s``: the mean wait is ≤ it. With no target, the fewest servers for stability.
    The wait percentile and mean fall as c grows, so the search scans up from ⌊λ/μ⌋ + 1.
    """
    _rates(lam, mu, max_servers)
    if (wait_s is None) != (percentile is None):
        raise ValueError("give wait_s and percentile together (e.g. wait_s=0.005, percentile=99)")
    for name, target in (("wait_s", wait_s), ("mean_wait_s", mean_wait_s)):
        if target is not None and not (math.isfinite(target) and target >= 0):
            raise ValueError(f"{name} = {target!r}: must be a finite number of seconds >= 0")
    c = math.floor(lam / mu) + 1
    while c <= max_servers:
        ok = wait_s is None or mmc_wait_percentile_s(lam, mu, c, percentile) <= wait_s
        ok = ok and (mean_wait_s is None or mmc_mean_wait_s(lam, mu, c) <= mean_wait_s)
        if ok:
            return c
        c += 1
    raise ValueError(f"no c <= max_servers = {max_servers} meets the target")


# ---------------------------------------------------------------- M/G/1
def mg1_mean_wait_s(lam: float, mean_service_s: float, second_moment_s2: float) -> float:
    """Pollaczek–Khinchine mean wait of M/G/1: λE[S²] / (2(1 − ρ)), ρ = λE[S]."""
    if not (math.isfinite(mean_service_s) and mean_service_s > 0):
        raise ValueError(f"mean_service_s = {mean_service_s!r}: must be a finite number > 0")
    if not second_moment_s2 >= mean_service_s**2:
        raise ValueError(f"second_moment_s2 = {second_moment_s2!r}: E[S^2] must be >= E[S]^2 = "
                         f"{mean_service_s**2:g}")
    rho = _rates(lam, 1.0 / mean_service_s)
    return lam * second_moment_s2 / (2.0 * (1.0 - rho))


def md1_mean_wait_s(lam: float, service_s: float) -> float:
    """M/D/1 mean wait (Pollaczek–Khinchine with E[S²] = S²): ρS / (2(1 − ρ))."""
    return mg1_mean_wait_s(lam, service_s, service_s**2)


# ---------------------------------------------------------------- Little's law
def little_law(arrival_s: np.ndarray, end_s: np.ndarray, t0_s: float, t1_s: float) -> dict[str, float]:
    """Both sides of L = λW from per-request records, over the window [t0, t1).

    ``L`` is the time-average number in system over the window, counted exactly from the records
    (every request present, including those that arrived before t0); ``lam`` is the number of
    arrivals in the window over its length; ``W`` the mean sojourn (end − arrival) of those arrivals.
    The two sides differ only by edge effects, which vanish as the window grows.
    Returns ``{"L": ..., "lam": ..., "W": ..., "lam_W": ..., "rel_error": (L − λW)/(λW)}``.
    """
    arrival = np.asarray(arrival_s, dtype=float)
    end = np.asarray(end_s, dtype=float)
    if arrival.shape != end.shape or np.any(~np.isfinite(end)) or np.any(end < arrival):
        raise ValueError("arrival_s and end_s must be equal-length, finite, with end >= arrival")
    if not t1_s > t0_s:
        raise ValueError(f"window [{t0_s}, {t1_s}): t1 must be above t0")
    # Time each request spends in the system inside the window, summed = ∫ N(t) dt over [t0, t1).
    overlap = np.clip(np.minimum(end, t1_s) - np.maximum(arrival, t0_s), 0.0, None).sum()
    length = t1_s - t0_s
    inside = (arrival >= t0_s) & (arrival < t1_s)
    if not inside.any():
        raise ValueError(f"no arrival in the window [{t0_s}, {t1_s})")
    lam = inside.sum() / length
    w = float((end[inside] - arrival[inside]).mean())
    big_l = float(overlap / length)
    return {"L": big_l, "lam": float(lam), "W": w, "lam_W": float(lam * w),
            "rel_error": float((big_l - lam * w) / (lam * w))}


# ---------------------------------------------------------------- batching servers
def batching_capacity_rps(mean_service_s_of_b: Callable[[int], float], max_batch_size: int,
                          replicas: int = 1, instances: int = 1) -> float:
    """Most requests/s a fleet of batching servers can complete: max over b of b/S(b), times servers.

    ``mean_service_s_of_b(b)`` is the mean service time of a batch of b; each of the
    ``replicas × instances`` execution slots, kept busy with its most efficient size, completes
    b/S(b) requests per second. A load at or above this has no steady state.
    """
    if isinstance(max_batch_size, bool) or int(max_batch_size) != max_batch_size or max_batch_size < 1:
        raise ValueError(f"max_batch_size = {max_batch_size!r}: must be an integer >= 1")
    for name, n in (("replicas", replicas), ("instances", instances)):
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"{name} = {n!r}: must be an integer >= 1")
    best = 0.0
    for b in range(1, int(max_batch_size) + 1):
        s = float(mean_service_s_of_b(b))
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"mean service time of a batch of {b} is {s!r}; it must be a finite number > 0")
        best = max(best, b / s)
    return best * replicas * instances
