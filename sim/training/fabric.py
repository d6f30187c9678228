"""The links a training job's collectives run on, and what one collective then takes.

From the GPU catalog (``sim/data/gpus.yaml``): inside a node each GPU's ``interconnect`` (NVLink, or PCIe
where a board has none), across nodes the node's ``network`` shared by its GPUs, both at
``network.efficiency`` of the datasheet (what NCCL's bus bandwidth reaches), with stated per-step
latencies. From a training profile: the all-reduce times measured on ``world_size`` processes of one
machine (gloo over loopback on CPU), which is then the only "node" (``MeasuredAllreduce.time_s``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.profiles.training import MeasuredAllreduce
from sim.theory.collectives import hierarchical_allreduce_s, reduce_scatter_s, ring_allreduce_s


@dataclass(frozen=True)
class Fabric:
    gpus_per_node: int
    intra_bytes_per_s: float  # per GPU, per direction, as a collective reaches it
    intra_latency_s: float  # one ring step inside a node
    inter_bytes_per_s: float | None  # per node, per direction (None: nothing known beyond one node)
    inter_latency_s: float
    source: str  # in words, for tables
    measured: MeasuredAllreduce | None = None  # a measured curve replaces the ring model inside the node
    overlaps_compute: bool = True  # False: collectives run on the cores that compute (gloo on a busy CPU)

    def allreduce_s(self, message_bytes: float, ranks: int, ranks_per_node: int) -> float:
        """All-reduce over ``ranks``, ``ranks_per_node`` of them on each node (one ring per level)."""
        nodes = math.ceil(ranks / ranks_per_node)
        if nodes == 1 and self.measured is not None:
            return self.measured.time_s(message_bytes, ranks)
        if nodes == 1:
            return ring_allreduce_s(message_bytes, ranks, self.intra_bytes_per_s, self.intra_latency_s)
        return hierarchical_allreduce_s(message_bytes, ranks_per_node, nodes, self.intra_bytes_per_s,
                                        self.intra_latency_s, self._network_share(), self.inter_latency_s)

    def reduce_scatter_s(self, message_bytes: float, ranks: int, ranks_per_node: int) -> float:
        """Reduce-scatter (or all-gather): half an all-reduce's steps and bytes."""
        nodes = math.ceil(ranks / ranks_per_node)
        if nodes == 1 and self.measured is not None:
            return self.measured.time_s(message_bytes, ranks) / 2
        if nodes == 1:
            return reduce_scatter_s(message_bytes, ranks, self.intra_bytes_per_s, self.intra_latency_s)
        return self.allreduce_s(message_bytes, ranks, ranks_per_node) / 2

    def send_s(self, message_bytes: float, across_nodes: bool) -> float:
        """One point-to-point transfer (pipeline activations)."""
        if across_nodes:
            return self.inter_latency_s + message_bytes / self._network_share()
        return self.intra_latency_s + message_bytes / self.intra_bytes_per_s

    def spans_beyond(self, nodes: int) -> str | None:
        if nodes > 1 and self.inter_bytes_per_s is None:
            return (f"the job spans {nodes} nodes but {self.source} says nothing about links between nodes; "
                    f"at most {self.gpus_per_node} GPUs (cluster.gpus_per_node)")
        return None

    def _network_share(self) -> float:
        """A GPU's share of its node's network: every GPU of the node runs its own collective at once."""
        assert self.inter_bytes_per_s is not None
        return self.inter_bytes_per_s / self.gpus_per_node


def catalog_fabric(gpu, gpus_per_node: int, efficiency: float, intra_latency_s: float,
                   inter_latency_s: float) -> Fabric:
    intra = (gpu.interconnect_bytes_per_s or gpu.host_link_bytes_per_s) * efficiency
    inter = gpu.node_network_bytes_per_s * efficiency if gpu.node_network_bytes_per_s else None
    return Fabric(gpus_per_node, intra, intra_latency_s, inter, inter_latency_s,
                  f"the catalog's {gpu.key} links at {efficiency:.0%}")


def measured_fabric(allreduce: MeasuredAllreduce, gpus_per_node: int) -> Fabric:
    """A measured all-reduce. On CPU (gloo) the collective's copies and sums run on the same cores as the
    training step, every one of which a data-parallel rank keeps busy: nothing is left to overlap onto, so
    the gradient sync adds to the step instead of hiding behind the backward pass."""
    return Fabric(gpus_per_node, allreduce.bus_bandwidth_bytes_per_s, allreduce.latency_s, None, 0.0,
                  f"{allreduce.backend} all-reduce measured on {allreduce.world_size} processes", allreduce,
                  overlaps_compute=allreduce.device != "cpu")
