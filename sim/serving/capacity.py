"""How many requests per second a scenario's fleet can serve at most (its saturation point)."""

from __future__ import annotations

from sim.theory.queueing import batching_capacity_rps


def fleet_capacity_rps(scenario, service) -> float:
    """Most requests/s the fleet can serve: every instance of every replica (the autoscaler's maximum)
    running its most efficient batch size back to back, by ``service.mean_s``."""
    spec = scenario.autoscaler
    replicas = scenario.fleet.replicas if spec.type == "static" else spec.max_replicas
    return batching_capacity_rps(service.mean_s, scenario.batching.max_batch_size, replicas,
                                 scenario.fleet.instances_per_replica)
