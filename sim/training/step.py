"""One optimiser step of a layout: its parts, each from a measurement or a closed form.

On each GPU a step runs ``m = accumulation`` micro-batches through its pipeline stage, then syncs
gradients across the data-parallel ranks and updates its (share of the) weights:

* **compute** of one micro-batch: the profile's measured forward + backward time, or the roofline
  ``3 × forward FLOPs × micro_batch / (dense peak × mfu)``, split evenly over the tensor × pipeline
  ranks; activation checkpointing runs the forward twice (× 4/3);
* **tensor parallel**: per layer on the stage, two all-reduces of the layer's ``s b h`` activations in the
  forward and two in the backward (two more when recomputing), inside a node, not overlapped;
* **pipeline**: a micro-batch's activations sent to the next stage and its gradient back; the step lasts
  ``(m + p - 1)`` micro-batch times, of which ``p - 1`` are the bubble (``sim.theory.pipeline``);
* **gradient sync**: the stage's gradients in DDP's buckets (1 MiB, then ``bucket_mb`` each), all-reduced
  by DDP and ZeRO-1/2 (these as a reduce-scatter and an all-gather: the same bytes) one after another as
  the last micro-batch's backward pass fills them (``sim.theory.collectives.exposed_comm_of_buckets_s``);
  ZeRO-3 (FSDP, one unit per layer) gathers the parameters before the forward and the backward of every
  micro-batch and reduce-scatters the gradients after it (1.5 × the bytes), overlapped with that
  micro-batch's compute. On a CPU whose cores all compute, gloo has nothing to overlap onto and the sync
  adds to the step (``Fabric.overlaps_compute``);
* **optimiser**: measured, or the bytes it reads and writes per parameter at the HBM bandwidth (at the
  roofline's memory efficiency), on the ZeRO shard;
* **stragglers**: the step waits for the slowest rank (``sim.theory.reliability.straggler_factor``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.profiles.roofline import Assumptions
from sim.theory.collectives import exposed_comm_of_buckets_s, exposed_comm_s
from sim.theory.reliability import straggler_factor
from sim.training.layout import Layout, place
from sim.training.memory import stage_parameters
from sim.training.setup import Setup
from sim.training.states import activation_bytes, state_bytes

BACKWARD_SHARE = 2 / 3  # of forward + backward: the backward computes input and weight gradients
FIRST_BUCKET_BYTES = 2**20  # DDP's first gradient bucket (torch.distributed._DEFAULT_FIRST_BUCKET_BYTES)


@dataclass(frozen=True)
class StepTime:
    microbatches: int
    compute_s: float  # the stage's forward and backward passes of every micro-batch, no waiting
    tensor_comm_s: float  # tensor-parallel all-reduces of the step
    pipeline_comm_s: float  # activations and their gradients between stages
    bubble_s: float  # the stage idle while the pipeline fills and drains
    sync_s: float  # gradient (and ZeRO-3 parameter) communication of the step, all of it
    sync_exposed_s: float  # of it, what the backward pass does not hide
    optimizer_s: float
    straggler_s: float  # waiting for the slowest rank
    compute_source: str  # "measured" or "roofline"

    @property
    def total_s(self) -> float:
        return (self.compute_s + self.tensor_comm_s + self.pipeline_comm_s + self.bubble_s + self.sync_exposed_s
                + self.optimizer_s + self.straggler_s)

    @property
    def bubble_share(self) -> float:
        return self.bubble_s / self.total_s


def step_time(setup: Setup, layout: Layout) -> StepTime:
    plan, model, device = setup.plan, setup.model, setup.device
    fabric = device.fabric
    where = place(layout, fabric.gpus_per_node)
    t, p, m = layout.tensor, layout.pipeline, layout.accumulation
    compute_mb, source = _compute_per_microbatch(setup, layout)
    width = activation_bytes(plan.precision)
    tp_mb = send_mb = 0.0
    shape = model.transformer
    if shape is not None:
        boundary = shape.seq_len * layout.micro_batch * shape.hidden * width
        if t > 1:
            per_layer = 6 if layout.activation_checkpointing else 4
            tp_mb = math.ceil(model.layers / p) * per_layer * fabric.allreduce_s(boundary, t, t)
        if p > 1:
            send_mb = 2 * fabric.send_s(boundary / t, where.pipeline_across_nodes)
    per_mb = compute_mb + tp_mb + send_mb
    backward = compute_mb * (BACKWARD_SHARE if not layout.activation_checkpointing else 3 / 4)
    sync, exposed = _gradient_sync(setup, layout, where, compute_mb, backward)
    compute = m * compute_mb
    straggle = compute * (straggler_factor(layout.gpus, plan.reliability.straggler_cv) - 1)
    return StepTime(m, compute, m * tp_mb, m * send_mb, (p - 1) * per_mb, sync, exposed,
                    _optimizer_s(setup, layout), straggle, source)


def _compute_per_microbatch(setup: Setup, layout: Layout) -> tuple[float, str]:
    ranks = layout.tensor * layout.pipeline
    recompute = 4 / 3 if layout.activation_checkpointing else 1.0
    if setup.profile is not None:
        return setup.profile.compute_s(layout.micro_batch) * recompute / ranks, "measured"
    flops = setup.model.training_flops_per_sample * layout.micro_batch
    return flops * recompute / (setup.device.peak_flops * setup.plan.compute.mfu) / ranks, "roofline"


def _gradient_sync(setup: Setup, layout: Layout, where, compute_mb: float, backward_s: float) -> tuple[float, float]:
    """All of the step's data-parallel communication, and what of it the compute does not hide."""
    d = layout.data
    if d == 1:
        return 0.0, 0.0
    fabric = setup.device.fabric
    grads = stage_parameters(setup.model, layout.pipeline) / layout.tensor
    grads *= state_bytes(setup.plan.precision, setup.plan.optimizer).gradients
    if layout.zero < 3:
        sizes = ddp_buckets(grads, layout.bucket_bytes)
        comm = [fabric.allreduce_s(size, d, where.data_ranks_per_node) for size in sizes]
        if not fabric.overlaps_compute:
            return sum(comm), sum(comm)
        return sum(comm), exposed_comm_of_buckets_s(backward_s, sizes, comm)
    buckets = math.ceil(setup.model.layers / layout.pipeline)  # FSDP wraps each layer: one unit each
    per_bucket = 3 * fabric.reduce_scatter_s(grads / buckets, d, where.data_ranks_per_node)
    m = layout.accumulation
    if not fabric.overlaps_compute:
        return m * buckets * per_bucket, m * buckets * per_bucket
    return m * buckets * per_bucket, m * exposed_comm_s(compute_mb, per_bucket, buckets)


def ddp_buckets(gradient_bytes: float, cap_bytes: float) -> list[float]:
    """DDP's gradient buckets in the order the backward pass fills them: the first of 1 MiB
    (``torch.distributed._DEFAULT_FIRST_BUCKET_BYTES``), then ``bucket_cap_mb`` each, the last the rest."""
    first = min(gradient_bytes, FIRST_BUCKET_BYTES)
    rest = gradient_bytes - first
    full, tail = divmod(rest, cap_bytes)
    return [first] + [cap_bytes] * int(full) + ([tail] if tail > 0 else [])


def _optimizer_s(setup: Setup, layout: Layout) -> float:
    shard = layout.data if layout.zero >= 1 else 1
    params = stage_parameters(setup.model, layout.pipeline) / layout.tensor / shard
    if setup.profile is not None and setup.profile.optimizer_step_s() is not None:
        measured = setup.profile.parameters or setup.model.parameters
        return setup.profile.optimizer_step_s() * params / measured
    b = state_bytes(setup.plan.precision, setup.plan.optimizer)
    touched = b.gradients + 2 * b.optimizer + (2 if setup.plan.precision == "fp32" else 1) * b.weights
    return params * touched / (setup.device.memory_bandwidth_bytes_per_s * Assumptions().memory_efficiency)
