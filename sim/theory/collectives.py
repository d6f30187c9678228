"""Closed forms of the collectives data-parallel training runs, in the alpha-beta model.

A message of ``S`` bytes all-reduced by a ring over ``n`` ranks takes ``2(n-1)`` steps; in each a rank
sends ``S/n`` bytes to its neighbour and receives as much, so

    t = 2(n-1) * alpha + 2(n-1)/n * S / beta

with ``alpha`` the latency of one step and ``beta`` the *bus bandwidth*: what one rank's link moves per
direction (NCCL's ``busbw``). Reduce-scatter and all-gather are each half of that. Over nodes the
collective runs in two levels (NCCL's tree/ring hierarchy, Horovod's hierarchical all-reduce): a
reduce-scatter inside each node, an all-reduce of each rank's ``S/g`` slice across the ``k`` nodes on the
rank's share of the node's network, then an all-gather inside the node. :func:`fit_alpha_beta` reads
``alpha`` and ``beta`` back from measured times (``capsim calibrate --mode train``).

DDP overlaps the all-reduce with the backward pass: gradients are packed in buckets in the order the
backward pass produces them, and each bucket's all-reduce starts as soon as it is full and the previous
one has finished (one communication stream). :func:`exposed_comm_s` is the time that is left after
the backward pass ends for equal buckets, :func:`exposed_comm_of_buckets_s` for any (DDP's first bucket
is small: 1 MiB).
"""

from __future__ import annotations

import math

import numpy as np


def ring_allreduce_s(message_bytes: float, ranks: int, bus_bandwidth_bytes_per_s: float,
                     latency_s: float = 0.0) -> float:
    """Ring all-reduce of ``message_bytes`` over ``ranks``: ``2(n-1) alpha + 2(n-1)/n S / beta`` (0 for one rank)."""
    if ranks <= 1:
        return 0.0
    steps = 2 * (ranks - 1)
    return steps * latency_s + steps / ranks * message_bytes / bus_bandwidth_bytes_per_s


def reduce_scatter_s(message_bytes: float, ranks: int, bus_bandwidth_bytes_per_s: float,
                     latency_s: float = 0.0) -> float:
    """Ring reduce-scatter (or all-gather) of a ``message_bytes`` buffer: ``(n-1) alpha + (n-1)/n S / beta``."""
    if ranks <= 1:
        return 0.0
    return (ranks - 1) * latency_s + (ranks - 1) / ranks * message_bytes / bus_bandwidth_bytes_per_s


all_gather_s = reduce_scatter_s


def hierarchical_allreduce_s(message_bytes: float, ranks_per_node: int, nodes: int, intra_bytes_per_s: float,
                             intra_latency_s: float, inter_bytes_per_s: float, inter_latency_s: float) -> float:
    """All-reduce over ``ranks_per_node × nodes`` ranks in two levels.

    Inside a node: reduce-scatter then all-gather over the ``g = ranks_per_node`` ranks (together one ring
    all-reduce on the node's links); across nodes: a ring all-reduce of each rank's ``S/g`` slice over the
    ``k`` nodes at ``inter_bytes_per_s``, the rank's share of its node's network. With one node this is
    :func:`ring_allreduce_s`; with one rank per node, a ring over the network.
    """
    inside = ring_allreduce_s(message_bytes, ranks_per_node, intra_bytes_per_s, intra_latency_s)
    across = ring_allreduce_s(message_bytes / ranks_per_node, nodes, inter_bytes_per_s, inter_latency_s)
    return inside + across


def exposed_comm_s(backward_s: float, bucket_comm_s: float, buckets: int) -> float:
    """Communication left after the backward pass when ``buckets`` equal buckets are all-reduced in turn.

    Bucket ``i`` (1..n) is full at ``i/n`` of the backward pass and takes ``c = bucket_comm_s``; one
    stream runs them in order, so the last ends at ``max_i(i T/n + (n - i + 1) c)``, which is linear in
    ``i``: ``max(T/n + n c, T + c)``. What is exposed is that minus ``T``: at least the last bucket's
    ``c``, and ``n c - T (1 - 1/n)`` when communication is the slower of the two.
    """
    if buckets < 1:
        raise ValueError(f"buckets = {buckets}: at least 1")
    return max(backward_s / buckets + buckets * bucket_comm_s, backward_s + bucket_comm_s) - backward_s


def exposed_comm_of_buckets_s(backward_s: float, bucket_bytes, bucket_comm_s) -> float:
    """:func:`exposed_comm_s` for buckets of any sizes, by the recurrence it solves: bucket ``i`` is full
    when the backward pass has produced its bytes (at a steady rate) and starts when it is full and the
    one before it has finished; what is exposed is the last end beyond the backward pass."""
    sizes = np.asarray(bucket_bytes, dtype=float)
    ready = backward_s * np.cumsum(sizes) / sizes.sum()
    end = 0.0
    for at, comm in zip(ready, bucket_comm_s, strict=True):
        end = max(end, float(at)) + comm
    return max(0.0, end - backward_s)


def fit_alpha_beta(message_bytes, times_s, ranks: int) -> tuple[float, float]:
    """``(latency_s, bus_bandwidth_bytes_per_s)`` of the ring model from measured all-reduce times.

    Least squares on relative error (each size weighs the same whatever its time) of
    ``t = 2(n-1) alpha + 2(n-1)/n S / beta``, both terms kept non-negative.
    """
    sizes = np.asarray(message_bytes, dtype=float)
    times = np.asarray(times_s, dtype=float)
    if ranks < 2 or sizes.size < 2 or sizes.size != times.size or (times <= 0).any():
        raise ValueError("need two or more sizes with times > 0, on two or more ranks")
    steps = 2 * (ranks - 1)
    design = np.column_stack([np.full_like(sizes, steps), steps / ranks * sizes]) / times[:, None]
    (alpha, inverse_beta), *_ = np.linalg.lstsq(design, np.ones_like(times), rcond=None)
    if alpha < 0:  # the latency term is below resolution: bandwidth alone
        alpha, inverse_beta = 0.0, float(np.sum(design[:, 1]) / np.sum(design[:, 1] ** 2))
    if inverse_beta <= 0:  # no size-dependent term at all: latency alone, bandwidth unbounded
        return float(np.median(times) / steps), math.inf
    return float(alpha), float(1.0 / inverse_beta)
