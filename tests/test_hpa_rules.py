"""The HPA's rules on handcrafted metric values, each expected count worked out by hand.

Sources: kubernetes pkg/controller/podautoscaler/replica_calculator.go (tolerance, missing and
unready pods) and horizontal.go (stabilisation windows, scaling policies, legacy limits).
"""

from __future__ import annotations

import pytest

from sim.scaling.controllers import HPAController
from sim.scenario.scaling import HPA


def hpa(**kw) -> HPAController:
    base = {"type": "hpa", "min_replicas": 1, "max_replicas": 100,
            "metrics": [{"type": "resource", "name": "gpu_utilization", "target_utilization": 0.5}]}
    base.update(kw)
    return HPAController(HPA.model_validate(base))


# ---------------------------------------------------------------- tolerance band
@pytest.mark.parametrize("util, expected", [
    (0.54, 4),   # ratio 1.08: inside the 10% band -> keep 4
    (0.55, 4),   # ratio 1.10: on the edge, still inside
    (0.56, 5),   # ratio 1.12 -> ceil(1.12 * 4) = ceil(4.48) = 5
    (0.46, 4),   # ratio 0.92: inside
    (0.30, 3),   # ratio 0.60 -> ceil(0.6 * 4) = ceil(2.4) = 3
    (1.00, 8),   # ratio 2.00 -> 8
])
def test_tolerance_band(util, expected):
    c = hpa()
    values = {k: util for k in range(4)}
    assert c.replicas_for(values, set(), set(), 0.5, current=4) == expected


def test_per_direction_tolerance():
    c = hpa(behavior={"scale_up": {"tolerance": 0.5}, "scale_down": {"tolerance": 0.05}})
    four = lambda u: {k: u for k in range(4)}  # noqa: E731
    assert c.replicas_for(four(0.7), set(), set(), 0.5, current=4) == 4   # ratio 1.4 < 1 + 0.5
    assert c.replicas_for(four(0.8), set(), set(), 0.5, current=4) == 7   # ratio 1.6 -> ceil(6.4)
    assert c.replicas_for(four(0.47), set(), set(), 0.5, current=4) == 4  # ratio 0.94 ≥ 0.95? no:
    # 0.94 < 0.95 so it is outside the down band: ceil(0.94 * 4) = 4 anyway (no change)
    assert c.replicas_for(four(0.35), set(), set(), 0.5, current=4) == 3  # ceil(0.7 * 4) = 3


# ---------------------------------------------------------------- unready and missing pods
def test_unready_pods_damp_scale_up():
    c = hpa()
    ready = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}  # ratio 2.0 over the 4 ready pods
    # 4 more pods still loading count as 0%: (4 * 1.0) / (0.5 * 8) = 1.0 -> within tolerance -> keep 8
    assert c.replicas_for(ready, {4, 5, 6, 7}, set(), 0.5, current=8) == 8
    # 2 loading: 4 / (0.5 * 6) = 1.333 -> ceil(1.333 * 6) = 8
    assert c.replicas_for(ready, {4, 5}, set(), 0.5, current=6) == 8


def test_unready_pods_ignored_on_scale_down():
    c = hpa()
    # ratio 0.4 < 1: unready pods are left out entirely -> ceil(0.4 * 2) = 1
    assert c.replicas_for({0: 0.2, 1: 0.2}, {2, 3}, set(), 0.5, current=4) == 1


def test_missing_pods_count_as_target_on_scale_down():
    c = hpa()
    # 3 pods at 0.2 (ratio 0.4); 1 missing counts as 0.5: (0.6 + 0.5) / (0.5 * 4) = 0.55 -> ceil(2.2) = 3
    assert c.replicas_for({0: 0.2, 1: 0.2, 2: 0.2}, set(), {3}, 0.5, current=4) == 3


def test_missing_pods_count_as_zero_on_scale_up():
    c = hpa()
    # 2 pods at 1.0 (ratio 2.0); 2 missing count as 0: 2 / (0.5 * 4) = 1.0 -> keep current
    assert c.replicas_for({0: 1.0, 1: 1.0}, set(), {2, 3}, 0.5, current=4) == 4
    # 2 pods at 1.0, 1 missing: 2 / (0.5 * 3) = 1.333 -> ceil(4.0) = 4 ... with current 3 -> 4
    assert c.replicas_for({0: 1.0, 1: 1.0}, set(), {2}, 0.5, current=3) == 4


def test_direction_flip_keeps_current():
    c = hpa()
    # ratio 1.2 over 1 ready pod (0.6); 2 unready as 0: 0.6 / 1.5 = 0.4 -> flips to < 1 -> keep
    assert c.replicas_for({0: 0.6}, {1, 2}, set(), 0.5, current=3) == 3


# ---------------------------------------------------------------- legacy normalisation
def test_legacy_scale_up_limit_and_300s_max():
    c = hpa(max_replicas=50)
    assert c.normalize(0.0, current=1, proposal=10) == 4      # max(2*1, 4) = 4
    assert c.normalize(15.0, current=4, proposal=20) == 8     # max(2*4, 4) = 8
    assert c.normalize(30.0, current=8, proposal=20) == 16
    assert c.normalize(45.0, current=16, proposal=2) == 20    # max of recommendations in 300 s = 20
    assert c.normalize(329.0, current=20, proposal=2) == 20   # t=30 (20) is still inside [29, 329]
    assert c.normalize(346.0, current=20, proposal=2) == 2    # only t=45, 329, 346 (all 2) remain


def test_legacy_window_exact():
    """horizontal.go stabilizeRecommendation drops samples *before* the cutoff: the edge is kept."""
    c = hpa(max_replicas=50)
    c.normalize(0.0, current=10, proposal=10)
    assert c.normalize(100.0, current=10, proposal=3) == 10   # 10 from t=0 is within 300 s
    assert c.normalize(300.0, current=10, proposal=3) == 10   # t=0 is exactly at the cutoff: kept
    assert c.normalize(301.0, current=10, proposal=3) == 3


def test_scale_down_stabilization_window():
    c = hpa(behavior={"scale_down": {"stabilization_window_s": 60, "policies": [
        {"type": "Percent", "value": 100, "period_s": 15}]}})
    assert c.normalize(0.0, current=10, proposal=10) == 10
    assert c.normalize(15.0, current=10, proposal=4) == 10    # max over 60 s window = 10
    assert c.normalize(45.0, current=10, proposal=5) == 10
    assert c.normalize(60.0, current=10, proposal=4) == 5     # t=0 left the window: max(4, 5, 4) = 5
    assert c.normalize(106.0, current=5, proposal=4) == 4     # 45 and 60 are gone too


def test_scale_up_stabilization_window_takes_min():
    c = hpa(behavior={"scale_up": {"stabilization_window_s": 30}})
    assert c.normalize(0.0, current=2, proposal=2) == 2
    assert c.normalize(15.0, current=2, proposal=6) == 2      # min(2, 6) = 2 within 30 s
    assert c.normalize(30.0, current=2, proposal=6) == 6      # window (0, 30]: min(6, 6)


def test_scale_up_policies_max_and_min():
    up = {"policies": [{"type": "Pods", "value": 4, "period_s": 15}, {"type": "Percent", "value": 100, "period_s": 15}]}
    c = hpa(behavior={"scale_up": up})
    c.up_events.clear()
    assert c.normalize(0.0, current=2, proposal=20) == 6       # max(2 + 4, ceil(2 * 2)) = 6
    c._record_event(0.0, 2, 6)
    assert c.normalize(10.0, current=6, proposal=20) == 6      # start = 6 - 4 = 2 within the period: 6
    assert c.normalize(15.0, current=6, proposal=20) == 12     # event left the period: max(10, 12) = 12
    cmin = hpa(behavior={"scale_up": {**up, "select_policy": "Min"}})
    assert cmin.normalize(0.0, current=2, proposal=20) == 4    # min(6, 4)
    cdis = hpa(behavior={"scale_up": {"select_policy": "Disabled"}})
    assert cdis.normalize(0.0, current=2, proposal=20) == 2


def test_scale_down_percent_policy():
    down = {"stabilization_window_s": 0, "policies": [{"type": "Percent", "value": 50, "period_s": 30}]}
    c = hpa(behavior={"scale_down": down})
    assert c.normalize(0.0, current=10, proposal=2) == 5       # int(10 * 0.5)
    c._record_event(0.0, 10, 5)
    assert c.normalize(15.0, current=5, proposal=2) == 5       # start 10 within period -> floor 5
    assert c.normalize(30.0, current=5, proposal=2) == 2       # int(5 * 0.5) = 2


def test_min_max_clamp_skips_metrics():
    c = hpa(min_replicas=3, max_replicas=5)

    class Fleet:
        desired = 8

        def live(self):
            return []

    assert c.decide(0.0, monitor=None, fleet=Fleet()) == 5
    Fleet.desired = 1
    assert c.decide(15.0, monitor=None, fleet=Fleet()) == 3
