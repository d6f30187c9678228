"""Ray executor: a local cluster on loopback gives the same rows and plan as the local process pool."""

from __future__ import annotations

import pandas as pd
import pytest

from sim.experiments.executors import LocalExecutor, RayExecutor
from sim.experiments.sweep import run_sweep
from sim.planner.candidates import gpu_candidates
from sim.planner.search import Evaluator, Space, plan
from sim.scenario.load import scenario_from_dict

ray = pytest.importorskip("ray")

SCENARIO = {
    "name": "ray-vs-local",
    "workload": {"arrivals": {"process": "spike", "base_rps": 200, "spike_rps": 600, "start_s": 8,
                              "duration_s": 6, "ramp_s": 2}},
    "service": {"type": "parametric", "base_s": 0.004, "per_item_s": 0.001, "distribution": "lognormal", "cv": 0.3},
    "batching": {"max_batch_size": 8, "max_queue_delay_s": 0.001},
    "fleet": {"replicas": 2, "router": "least_outstanding"},
    "slo": {"latency_s": 0.03, "percentile": 99},
    "cost": {"usd_per_replica_hour": 0.8},
    "run": {"duration_s": 20, "warmup_s": 1, "seed": 9},
}


@pytest.fixture(scope="module")
def ray_executor():
    executor = RayExecutor(workers=2)  # ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1")
    yield executor
    executor.close()


def test_ray_gives_the_same_sweep_and_plan_as_local(ray_executor, tmp_path):
    scenario = scenario_from_dict(SCENARIO)
    params = {"fleet.replicas": [1, 2, 3], "batching.max_batch_size": [1, 8]}
    local = run_sweep(scenario, params, replications=2, executor=LocalExecutor(2), progress=False)
    remote = run_sweep(scenario, params, replications=2, executor=ray_executor, progress=False)
    pd.testing.assert_frame_equal(local.rows, remote.rows)

    space = Space(gpu_candidates(scenario), [1, 8], [0.0, 0.002], [1, 2, 3, 4])
    tables = []
    for executor in (LocalExecutor(2), ray_executor):
        runner = Evaluator(scenario, 2, 9, executor, None, progress=False)
        tables.append(plan(scenario, space, runner, "grid").table)
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert tables[0]["meets_slo"].any()
