"""Sweep throughput: a 200-point grid of a 10-minute, 200 req/s scenario, 3 replications each.

    .venv/bin/python benchmarks/sweep_throughput.py            # the full run (~72M simulated requests)
    .venv/bin/python benchmarks/sweep_throughput.py --quick    # 20 points, 60 s horizon: a smoke test

Prints wall time, points/s, runs/s and simulated requests/s. Every run starts from an empty
checkpoint (a temporary directory), so nothing is reused. Results: docs/planner.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from sim.experiments.executors import close_executor, make_executor
from sim.experiments.sweep import run_sweep
from sim.scenario.load import scenario_from_dict

SCENARIO = {
    "name": "sweep-bench",
    "workload": {"arrivals": {"process": "poisson", "rate_rps": 200}},
    "service": {"type": "parametric", "base_s": 0.004, "per_item_s": 0.001, "distribution": "lognormal",
                "cv": 0.3},
    "batching": {"max_batch_size": 8, "max_queue_delay_s": 0.001},
    "fleet": {"replicas": 2, "router": "least_outstanding"},
    "slo": {"latency_s": 0.05, "percentile": 99},
    "cost": {"usd_per_replica_hour": 0.8},
    "run": {"duration_s": 600, "warmup_s": 10, "seed": 1},
}
# 10 replica counts × 5 batch sizes × 4 queue delays = 200 points
PARAMS = {
    "fleet.replicas": list(range(1, 11)),
    "batching.max_batch_size": [1, 2, 4, 8, 16],
    "batching.max_queue_delay_s": [0.0, 0.001, 0.002, 0.003],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200, help="first N points of the grid (default 200)")
    parser.add_argument("--replications", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="20 points with a 60 s horizon")
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    args = parser.parse_args()
    points, duration = (20, 60.0) if args.quick else (args.points, args.duration_s)
    data = {**SCENARIO, "run": {**SCENARIO["run"], "duration_s": duration}}
    scenario = scenario_from_dict(data)
    params = dict(PARAMS)
    # Trim the slowest-varying axis to reach the requested point count (whole replica rows).
    per_row = len(params["batching.max_batch_size"]) * len(params["batching.max_queue_delay_s"])
    params["fleet.replicas"] = params["fleet.replicas"][: max(1, -(-points // per_row))]
    executor = make_executor(args.executor, args.workers)
    with tempfile.TemporaryDirectory() as checkpoint:
        start = time.perf_counter()
        try:
            result = run_sweep(scenario, params, replications=args.replications, executor=executor,
                               checkpoint_dir=checkpoint, progress=True)
        finally:
            close_executor(executor)
        wall = time.perf_counter() - start
    n_points = result.rows["point"].nunique()
    runs = len(result.rows)
    requests = int(result.rows["requests_total"].sum())
    workers = getattr(executor, "workers", 1)
    print(f"cores: {os.cpu_count()}, workers: {workers}, executor: {args.executor}")
    print(f"{n_points} points × {args.replications} replications = {runs} runs, {requests:,} measured requests")
    print(f"wall time: {wall:,.1f} s; {n_points / wall:.3f} points/s; {runs / wall:.2f} runs/s; "
          f"{requests / wall:,.0f} simulated requests/s")


if __name__ == "__main__":
    main()
