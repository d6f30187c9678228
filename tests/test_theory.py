"""sim.theory.queueing against numbers worked by hand or given in textbooks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.theory import queueing as theory


def erlang_c_by_sum(lam: float, mu: float, c: int) -> float:
    """The textbook definition, for cross-checking the recursion at small c."""
    a, rho = lam / mu, lam / (c * mu)
    top = a**c / math.factorial(c) / (1 - rho)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def test_mm1_known_numbers():
    # λ = 8, μ = 10: W = 1/(10 − 8) = 0.5 s, Wq = 0.8 · 0.5 = 0.4 s.
    assert theory.mm1_mean_sojourn_s(8, 10) == pytest.approx(0.5)
    assert theory.mm1_mean_wait_s(8, 10) == pytest.approx(0.4)
    # Sojourn ~ Exp(2): median ln 2 / 2, p99 ln 100 / 2.
    assert theory.mm1_sojourn_percentile_s(8, 10, 50) == pytest.approx(math.log(2) / 2)
    assert theory.mm1_sojourn_percentile_s(8, 10, 99) == pytest.approx(math.log(100) / 2)
    assert theory.seed_latency_s(8, 10) == theory.mm1_mean_sojourn_s(8, 10)


def test_erlang_c_known_numbers():
    assert theory.erlang_c(2, 1, 3) == pytest.approx(4 / 9)  # a = 2 Erlangs on 3 servers
    assert theory.erlang_c(1, 1, 2) == pytest.approx(1 / 3)  # M/M/2 at ρ = 0.5: 2ρ²/(1 + ρ)
    assert theory.erlang_c(0.7, 1, 1) == pytest.approx(0.7)  # one server: P(wait) = ρ
    assert theory.erlang_c(0, 1, 4) == 0.0


@pytest.mark.parametrize(("lam", "mu", "c"), [(3.2, 1.0, 4), (45.0, 5.0, 10), (0.5, 2.0, 1), (17.0, 1.0, 20)])
def test_erlang_c_matches_the_defining_sum(lam, mu, c):
    assert theory.erlang_c(lam, mu, c) == pytest.approx(erlang_c_by_sum(lam, mu, c), rel=1e-12)


def test_erlang_c_is_stable_for_large_fleets():
    # a = 950 Erlangs on 1000 servers: the factorial sum overflows; the recursion does not.
    value = theory.erlang_c(950, 1, 1000)
    assert 0 < value < 1


def test_mmc_wait_mean_tail_and_percentile():
    lam, mu, c = 2.0, 1.0, 3
    big_c = 4 / 9
    assert theory.mmc_mean_wait_s(lam, mu, c) == pytest.approx(big_c / (3 - 2))
    assert theory.mmc_mean_sojourn_s(lam, mu, c) == pytest.approx(big_c + 1)
    assert theory.mmc_wait_tail(lam, mu, c, 0.0) == pytest.approx(big_c)
    np.testing.assert_allclose(theory.mmc_wait_tail(lam, mu, c, np.array([1.0, 2.0])),
                               big_c * np.exp([-1.0, -2.0]))
    p99 = theory.mmc_wait_percentile_s(lam, mu, c, 99)
    assert p99 == pytest.approx(math.log(big_c / 0.01))
    assert theory.mmc_wait_tail(lam, mu, c, p99) == pytest.approx(0.01)
    # More than 1 − C of arrivals never wait, so the median wait is 0.
    assert theory.mmc_wait_percentile_s(lam, mu, c, 50) == 0.0


def test_mmc_with_one_server_is_mm1():
    assert theory.mmc_mean_wait_s(8, 10, 1) == pytest.approx(theory.mm1_mean_wait_s(8, 10))
    assert theory.mmc_mean_sojourn_s(8, 10, 1) == pytest.approx(theory.mm1_mean_sojourn_s(8, 10))


def test_pollaczek_khinchine():
    # M/D/1, S = 1 ms, λ = 800/s: ρ = 0.8, Wq = 0.8 · 1 ms / (2 · 0.2) = 2 ms.
    assert theory.md1_mean_wait_s(800, 0.001) == pytest.approx(0.002)
    # M/M/1 as M/G/1 (E[S²] = 2/μ²) gives ρ/(μ − λ).
    assert theory.mg1_mean_wait_s(8, 0.1, 2 * 0.1**2) == pytest.approx(theory.mm1_mean_wait_s(8, 10))
    # M/D/1 waits half as long as M/M/1 at the same load.
    assert theory.md1_mean_wait_s(8, 0.1) == pytest.approx(theory.mm1_mean_wait_s(8, 10) / 2)


def test_little_law_on_a_handmade_record():
    # Two requests: [0, 2) and [1, 4). Over [0, 4): ∫N dt = 2 + 3 = 5, L = 1.25; λ = 0.5, W = 2.5.
    out = theory.little_law(np.array([0.0, 1.0]), np.array([2.0, 4.0]), 0.0, 4.0)
    assert out["L"] == pytest.approx(1.25)
    assert out["lam"] == pytest.approx(0.5)
    assert out["W"] == pytest.approx(2.5)
    assert out["rel_error"] == pytest.approx(0.0)
    # A window that cuts requests counts only the time they spend inside it.
    cut = theory.little_law(np.array([0.0, 1.0]), np.array([2.0, 4.0]), 1.0, 3.0)
    assert cut["L"] == pytest.approx((1 + 2) / 2)


def test_batching_capacity():
    # S(b) = 2 ms + 0.5 ms·b: b/S(b) rises with b, so the largest size wins: 8/6 ms.
    cap = theory.batching_capacity_rps(lambda b: 0.002 + 0.0005 * b, 8, replicas=3, instances=2)
    assert cap == pytest.approx(8 / 0.006 * 6)
    # A size that runs badly (here 8) is not the one capacity is counted at.
    times = {1: 1.0, 2: 1.0, 3: 1.5, 4: 1.6, 5: 2.0, 6: 2.4, 7: 2.8, 8: 8.0}
    assert theory.batching_capacity_rps(times.__getitem__, 8) == pytest.approx(4 / 1.6)


def test_min_servers():
    lam, mu = 45.0, 5.0  # a = 9 Erlangs
    assert theory.mmc_min_servers(lam, mu) == 10  # the fewest for stability
    c = theory.mmc_min_servers(lam, mu, wait_s=0.05, percentile=99)
    assert theory.mmc_wait_percentile_s(lam, mu, c, 99) <= 0.05 < theory.mmc_wait_percentile_s(lam, mu, c - 1, 99)
    c = theory.mmc_min_servers(lam, mu, mean_wait_s=0.01)
    assert theory.mmc_mean_wait_s(lam, mu, c) <= 0.01 < theory.mmc_mean_wait_s(lam, mu, c - 1)
    assert theory.mmc_min_servers(lam, mu, wait_s=0.0, percentile=50) >= 10


@pytest.mark.parametrize("call", [
    lambda: theory.mm1_mean_sojourn_s(10, 10),
    lambda: theory.mm1_mean_wait_s(11, 10),
    lambda: theory.erlang_c(4, 1, 4),
    lambda: theory.mmc_mean_wait_s(5, 1, 4),
    lambda: theory.md1_mean_wait_s(1000, 0.001),
    lambda: theory.mg1_mean_wait_s(2, 0.5, 1.0),
])
def test_unstable_inputs_raise(call):
    with pytest.raises(ValueError, match="unstable"):
        call()


@pytest.mark.parametrize(("call", "match"), [
    (lambda: theory.mm1_mean_sojourn_s(-1, 10), "lam"),
    (lambda: theory.mm1_mean_sojourn_s(1, 0), "mu"),
    (lambda: theory.erlang_c(1, 1, 0), "servers"),
    (lambda: theory.mm1_sojourn_percentile_s(1, 2, 100), "percentile"),
    (lambda: theory.mg1_mean_wait_s(1, 0.1, 0.001), "second_moment"),
    (lambda: theory.mmc_min_servers(1, 1, wait_s=0.1), "together"),
    (lambda: theory.batching_capacity_rps(lambda b: 0.0, 4), "batch of 1"),
    (lambda: theory.little_law(np.array([1.0]), np.array([0.5]), 0, 2), "end >= arrival"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
