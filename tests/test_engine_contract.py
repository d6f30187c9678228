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
    env._now = 2.0  # what replay_arrivals does for an arrival before every scheduled event
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


def test_simpy_queue_holds_pending_events_last_in_each_entry():
    """Engine.fail_replica finds a replica's running batches in ``env._queue``: (time, priority, id, event)."""
    env = simpy.Environment()
    event = env.timeout(1.0, ("replica", [7]))
    assert [entry[-1] for entry in env._queue] == [event] and event._value == ("replica", [7])


def test_fail_replica_hands_back_what_it_held_and_its_batch_completes_nothing():
    """Requests at 0.1 and 0.2 s on one replica with 0.5 s batches of one: at 0.3 s the first is running,
    the second queued. The crash returns both (running first), cuts the batch at 0.3 s, and the batch's
    completion event at 0.6 s then finishes nothing; a request lost for good is recorded as rejected."""
    scenario = scenario_from_dict({
        "workload": {"arrivals": {"process": "deterministic", "rate_rps": 10}},
        "service": {"type": "parametric", "base_s": 0.5}, "run": {"requests": 2}})
    rng = np.random.default_rng(0)
    engine = Engine(scenario, np.array([0.1, 0.2]), build_service(scenario, rng), build_router("round_robin", rng),
                    sample_interval_s=0.1, horizon_s=0.25, stop_s=2.0)
    rep = engine.replicas()[0]
    got = []

    def crash(_):
        lost, cut = engine.fail_replica(rep)
        got.append((lost, cut, engine.ready_count()))
        for i in lost:
            engine.lose(i, rep.index)

    engine.env.timeout(0.3).callbacks.append(crash)
    records = engine.run()
    assert got == [([0, 1], [0], 0)]
    assert records.batch_end_s.tolist() == [0.3] and records.batch_of.tolist() == [-1, -1]
    assert records.outcome.tolist() == [1, 1] and records.drop_s.tolist() == [0.3, 0.3]


def test_a_front_sees_every_arrival_and_admits_or_answers():
    """A front that answers request 0 itself (at 0.15 s) and admits request 1 half a second late: the
    admitted request's queueing starts when it is admitted."""
    engine = _engine(replicas=1)

    class Front:
        def arrive(self, i):
            if i == 0:
                engine.answer_without_model(i, engine.env.now + 0.05)
            else:
                engine.env.timeout(0.5, i).callbacks.append(lambda event: engine.admit(event.value))

    engine.attach_front(Front())
    records = engine.run()
    assert abs(records.drop_s[0] - 0.15) < 1e-12 and records.batch_of[0] == -1 and records.outcome[0] == 0
    starts = records.batch_start_s[records.batch_of[1:]]
    np.testing.assert_allclose(starts, [0.7, 0.8, 0.9])
