"""Failures, checkpoints and stragglers of a long synchronous job, in closed form.

A job of ``W`` seconds of work is cut into segments of ``tau`` seconds of work, each ended by a
checkpoint that takes ``C``. Failures of the whole job arrive as a Poisson process with mean time
between failures ``M`` (``M = per-GPU MTBF / GPUs``: any GPU stops a synchronous job); each costs a
restart of ``R`` and the work since the last checkpoint. With failures possible at any time, restarts
and checkpoints included, a segment takes on average (Daly 2006, eq. 6)

    E[segment] = M e^(R/M) (e^((tau + C)/M) - 1)

:func:`expected_wall_s` adds the segments up; :func:`young_interval_s` (Young 1974) and
:func:`daly_interval_s` (Daly 2006, eq. 37) are the classic approximations of the best ``tau``, and
:func:`best_interval_s` the minimum of the expected wall time itself. ``sim/training/failures.py``
simulates the same job with seeded failures (tests/test_training_theory.py holds the two together).

A synchronous step waits for its slowest rank: with ``n`` ranks whose compute times are independent and
normal with coefficient of variation ``cv``, the step takes ``1 + cv z_n`` times the mean, ``z_n`` the
expected largest of ``n`` standard normals (:func:`expected_max_standard_normal`).
"""

from __future__ import annotations

import math
from functools import cache

from scipy.integrate import quad
from scipy.optimize import minimize_scalar
from scipy.stats import norm


def segment_s(work_s: float, checkpoint_s: float, restart_s: float, mtbf_s: float) -> float:
    """Expected wall time of ``work_s`` of work and the checkpoint after it, failures included."""
    if math.isinf(mtbf_s):
        return work_s + checkpoint_s
    return mtbf_s * math.exp(restart_s / mtbf_s) * math.expm1((work_s + checkpoint_s) / mtbf_s)


def expected_wall_s(work_s: float, interval_s: float, checkpoint_s: float, restart_s: float,
                    mtbf_s: float) -> float:
    """Expected wall time of ``work_s`` checkpointed every ``interval_s`` of work (the last segment shorter)."""
    full = math.floor(work_s / interval_s)
    rest = work_s - full * interval_s
    total = full * segment_s(interval_s, checkpoint_s, restart_s, mtbf_s)
    return total + (segment_s(rest, checkpoint_s, restart_s, mtbf_s) if rest > 1e-9 * work_s else 0.0)


def young_interval_s(checkpoint_s: float, mtbf_s: float) -> float:
    """Young's first-order optimum: ``sqrt(2 C M)``."""
    return math.sqrt(2 * checkpoint_s * mtbf_s)


def daly_interval_s(checkpoint_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimum: ``sqrt(2CM) [1 + sqrt(C/2M)/3 + C/(18M)] - C`` for ``C < 2M``, else ``M``."""
    if checkpoint_s >= 2 * mtbf_s:
        return mtbf_s
    ratio = checkpoint_s / (2 * mtbf_s)
    return young_interval_s(checkpoint_s, mtbf_s) * (1 + math.sqrt(ratio) / 3 + ratio / 9) - checkpoint_s


def best_interval_s(work_s: float, checkpoint_s: float, restart_s: float, mtbf_s: float) -> float:
    """The interval that minimises :func:`expected_wall_s` (searched around Daly's)."""
    if math.isinf(mtbf_s):
        return work_s
    guess = daly_interval_s(checkpoint_s, mtbf_s)
    hi = min(work_s, 20 * guess)
    found = minimize_scalar(lambda t: expected_wall_s(work_s, t, checkpoint_s, restart_s, mtbf_s),
                            bounds=(min(guess / 20, hi), hi), method="bounded", options={"xatol": 1e-3 * guess})
    return float(found.x)


@cache
def expected_max_standard_normal(n: int) -> float:
    """Expected largest of ``n`` independent standard normals: ``∫ x n φ(x) Φ(x)^(n-1) dx`` (1/√π for two)."""
    if n <= 1:
        return 0.0
    value, _ = quad(lambda x: x * n * norm.pdf(x) * norm.cdf(x) ** (n - 1), -12, 12, limit=200)
    return float(value)


def straggler_factor(ranks: int, cv: float) -> float:
    """How much longer a synchronous step takes than the mean rank's: ``1 + cv z_n``."""
    return 1.0 + cv * expected_max_standard_normal(ranks)
