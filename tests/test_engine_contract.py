"""The engine's contract: the SimPy internals it relies on, and its public methods for the fleet.

The engine moves SimPy's clock itself (``env._now``) for arrivals that precede every scheduled event
and reads a timeout's value from ``event._value``; simpy is pinned below 5 for that, and these tests
fail first if a SimPy release changes either.
"""

from __future__ import annotations

import numpy as np
import simpy

from sim.scenario.load import scenario_from_dict
from sim.serving.engine import Engine
from sim.serving.routers import build_router
from sim.serving.service import build_service


def test_simpy_clock_can_be_moved_between_events():
    env = simpy.Environment()
    seen = []

    def proc():
        yield env.timeout(5.0)
        seen.append(env.now)

    env.process(proc())
    env.step()  # the process starts; its timeout is now scheduled at 5
    assert env.peek() == 5.0
    env._now = 2.0  # what Engine._source does for an arrival before every scheduled event
    assert env.now == 2.0
    env.run()
    assert seen == [5.0] and env.now == 5.0


def test_simpy_timeout_value_is_readable_in_its_callback():
    env = simpy.Environment()
    got = []
    env.timeout(1.0, ("replica", [1, 2])).callbacks.append(lambda ev: got.append((ev._value, ev.value)))
    env.run()
    assert got == [(("replica", [1, 2]), ("replica", [1, 2]))]


def _engine(replicas: int = 1) -> Engine:
    scenario = scenario_from_dict({
        "workload": {"arrivals": {"process": "deterministic", "rate_rps": 10}},
        "service": {"type": "parametric", "base_s": 0.05},
        "fleet": {"replicas": replicas}, "run": {"requests": 4}})
    rng = np.random.default_rng(0)
    return Engine(scenario, np.array([0.1, 0.2, 0.3, 0.4]), build_service(scenario, rng),
                  build_router("round_robin", rng), sample_interval_s=0.1, horizon_s=0.45)


def test_a_new_replica_takes_traffic_only_once_marked_ready():
    engine = _engine(replicas=1)
    first = engine.replicas()[0]
    extra = engine.add_replica(created_s=0.0)
    assert engine.ready_count() == 1 and len(engine.replicas()) == 2
    engine.env.timeout(0.15).callbacks.append(lambda _: engine.mark_ready(extra))
    records = engine.run()
    assert engine.ready_count() == 2
    served_by = dict(zip(records.arrival_s.tolist(), records.batch_replica[records.batch_of].tolist()))
    assert served_by[0.1] == first.index  # before the extra replica was ready
    assert extra.index in served_by.values()


def test_stop_routing_calls_back_once_the_replica_is_idle():
    engine = _engine(replicas=2)
    a, b = engine.replicas()
    idle_at = []
    # At 0.12 replica a runs the request of 0.1 (until 0.15): it must finish it, then be reported idle.
    engine.env.timeout(0.12).callbacks.append(
        lambda _: engine.stop_routing(a, when_idle=lambda rep: idle_at.append((rep.index, engine.env.now))))
    records = engine.run()
    assert len(idle_at) == 1 and idle_at[0][0] == a.index
    assert abs(idle_at[0][1] - 0.15) < 1e-9
    later = records.arrival_s > 0.12
    assert set(records.batch_replica[records.batch_of[later]].tolist()) == {b.index}


def test_snapshot_reports_counters_of_ready_replicas():
    engine = _engine(replicas=2)
    per, held = engine.snapshot()
    assert held == 0 and set(per) == {0, 1}
    assert all(v == (0.0, 0, 0, 0) for v in per.values())
