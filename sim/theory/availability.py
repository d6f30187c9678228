"""Availability of a replica that fails and is restarted, in closed form.

A replica alternates up times U (mean MTBF) and repair times R (mean MTTR; here a restart, which is a
cold start). By the renewal-reward theorem the long-run share of time it is up is
E[U] / (E[U] + E[R]) = MTBF / (MTBF + MTTR), whatever the laws of U and R. A Weibull up time with shape k
and scale λ has mean λ Γ(1 + 1/k), so the scale that gives a stated MTBF is MTBF / Γ(1 + 1/k).
"""

from __future__ import annotations

import math


def steady_availability(mtbf_s: float, mttr_s: float) -> float:
    """Long-run share of time up: MTBF / (MTBF + MTTR)."""
    if mtbf_s <= 0 or mttr_s < 0:
        raise ValueError(f"mtbf_s = {mtbf_s}, mttr_s = {mttr_s}: need MTBF > 0 and MTTR ≥ 0")
    return mtbf_s / (mtbf_s + mttr_s)


def weibull_scale_s(mtbf_s: float, shape: float) -> float:
    """The Weibull scale λ whose mean λ Γ(1 + 1/k) is ``mtbf_s``."""
    if mtbf_s <= 0 or shape <= 0:
        raise ValueError(f"mtbf_s = {mtbf_s}, shape = {shape}: both must be > 0")
    return mtbf_s / math.gamma(1.0 + 1.0 / shape)
