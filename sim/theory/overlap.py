"""Host/device overlap as a two-stage tandem queue, in closed form.

A serving loop does host work H (pre/post-processing, copies) and device work D for each batch. Run
serially, a saturated replica completes one batch every E[H] + E[D]. Pipelined with double buffering
(the host prepares batch k+1 while the device runs batch k, and holds it until the device is free: a
two-stage tandem line with no buffer between the stages, blocking after service), it completes one
every max(E[H], E[D]) when both stages are deterministic, so the throughput gain is
(E[H] + E[D]) / max(E[H], E[D]), at most 2 when H = D.

With exponential stages of rates μ₁ (host) and μ₂ (device) the blocked line's saturated throughput is
μ₁μ₂(μ₁ + μ₂) / (μ₁² + μ₁μ₂ + μ₂²) (a three-state Markov chain: host working with the device idle, both
working, host blocked), e.g. 2μ/3 for equal rates: variability costs some of the overlap.
"""

from __future__ import annotations


def serial_batches_per_s(host_s: float, device_s: float) -> float:
    """A saturated serial loop: 1 / (E[H] + E[D]) batches per second."""
    return 1.0 / (host_s + device_s)


def pipelined_batches_per_s(host_s: float, device_s: float) -> float:
    """A saturated two-stage pipeline with deterministic stages: 1 / max(H, D) batches per second."""
    return 1.0 / max(host_s, device_s)


def blocking_tandem_batches_per_s(host_rate: float, device_rate: float) -> float:
    """Saturated throughput of two exponential stages with no buffer between them (blocking after service)."""
    a, b = host_rate, device_rate
    return a * b * (a + b) / (a * a + a * b + b * b)
