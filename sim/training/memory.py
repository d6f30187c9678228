"""Memory of one GPU under a layout: states, activations, runtime; the fit, and what would fit instead.

Per GPU, for the largest pipeline stage's parameters ``P`` split over the tensor-parallel ranks, with
``d`` data-parallel ranks and the bytes per parameter of ``states.py`` (weights ``w``, gradients ``g``,
optimiser ``k``; ``2 + 2 + 12`` for mixed-precision Adam), ZeRO (Rajbhandari et al. 2020) shards:

    DDP (ZeRO-0)  P (w + g + k)        ZeRO-1  P (w + g + k/d)
    ZeRO-2        P (w + (g + k)/d)    ZeRO-3  P (w + g + k)/d   (FSDP FULL_SHARD)

Activations: a transformer stage's layers × the per-layer count of ``models.py`` × the micro-batches in
flight on the first stage under 1F1B (``min(pipeline, accumulation)``); with activation checkpointing
each layer keeps only its input (``s b h``) and one layer's full activations are rebuilt at a time.
A single-stage language model adds its fp32 logits. The runtime reserve (CUDA context, NCCL buffers)
is the LLM memory plan's (``sim.llm.memory.RUNTIME_RESERVE_BYTES``). Allocator fragmentation and
temporary buffers are not counted: a plan within a few per cent of the limit is marked tight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sim.llm.memory import RUNTIME_RESERVE_BYTES
from sim.training.layout import Layout, layout_problem
from sim.training.models import LOSS_BYTES, TrainedModel
from sim.training.states import activation_bytes, state_bytes

TIGHT_SHARE = 0.95  # above this share of the GPU's memory a plan fits on paper only


@dataclass(frozen=True)
class Memory:
    """Bytes on the fullest GPU of the layout."""

    gpu_memory_bytes: int
    parameters_per_gpu: float  # before ZeRO sharding
    weights_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    runtime_bytes: float

    @property
    def states_bytes(self) -> float:
        return self.weights_bytes + self.gradients_bytes + self.optimizer_bytes

    @property
    def total_bytes(self) -> float:
        return self.states_bytes + self.activations_bytes + self.runtime_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.gpu_memory_bytes

    @property
    def tight(self) -> bool:
        return self.fits and self.total_bytes > TIGHT_SHARE * self.gpu_memory_bytes


def stage_parameters(model: TrainedModel, pipeline: int) -> float:
    """Parameters of the largest pipeline stage: its layers and, at an end, half the embedding parameters
    (the input embedding on the first stage, the output head on the last); all of them with one stage."""
    layers = math.ceil(model.layers / pipeline) * model.layer_parameters
    return layers + (model.embedding_parameters if pipeline == 1 else model.embedding_parameters / 2)


def memory(model: TrainedModel, layout: Layout, precision: str, optimizer: str, gpu_memory_bytes: int,
           runtime_bytes: float = RUNTIME_RESERVE_BYTES) -> Memory:
    per_gpu = stage_parameters(model, layout.pipeline) / layout.tensor
    b = state_bytes(precision, optimizer)
    d = layout.data
    shard_grads = layout.zero >= 2
    return Memory(
        gpu_memory_bytes=gpu_memory_bytes, parameters_per_gpu=per_gpu,
        weights_bytes=per_gpu * b.weights / (d if layout.zero >= 3 else 1),
        gradients_bytes=per_gpu * b.gradients / (d if shard_grads else 1),
        optimizer_bytes=per_gpu * b.optimizer / (d if layout.zero >= 1 else 1),
        activations_bytes=activations(model, layout, precision), runtime_bytes=runtime_bytes)


def activations(model: TrainedModel, layout: Layout, precision: str) -> float:
    """Saved activations on the first pipeline stage, the fullest, in bytes."""
    width = activation_bytes(precision)
    layers = math.ceil(model.layers / layout.pipeline)
    in_flight = min(layout.pipeline, layout.accumulation)
    shape = model.transformer
    if shape is None:
        return model.activation_elems_per_sample * layout.micro_batch * width * layers / model.layers * in_flight
    t = layout.tensor
    replicated, split = shape.layer_activation_elems(layout.micro_batch, layout.flash_attention)
    whole = replicated / (t if layout.sequence_parallel else 1) + split / t
    if layout.activation_checkpointing:
        layer_input = shape.seq_len * layout.micro_batch * shape.hidden / (t if layout.sequence_parallel else 1)
        per_stage = layers * layer_input * in_flight + whole
    else:
        per_stage = layers * whole * in_flight
    logits = LOSS_BYTES * shape.seq_len * layout.micro_batch * shape.vocab / t if shape.lm_head and layout.pipeline == 1 else 0
    return per_stage * width + logits


def what_fits(model: TrainedModel, layout: Layout, precision: str, optimizer: str, gpu_memory_bytes: int,
              gpus_per_node: int, max_gpus: int = 65536) -> list[str]:
    """Changes of one kind each that make the layout fit, the smallest of each kind, in words."""
    def fits(**changes) -> Layout | None:
        c = replace(layout, **changes)
        c = replace(c, global_batch=c.data * c.micro_batch * max(1, layout.accumulation))  # memory, not batch
        if c.gpus > max_gpus or layout_problem(c, model, gpus_per_node):
            return None
        return c if memory(model, c, precision, optimizer, gpu_memory_bytes).fits else None

    found = []
    zero = next((z for z in range(layout.zero + 1, 4) if fits(zero=z)), None)
    if zero is not None:
        found.append(f"zero: {zero}")
    else:
        wider = next((g for g in _doublings(layout.gpus * 2, max_gpus) if fits(zero=3, gpus=g)), None)
        if wider is not None:
            found.append(f"zero: 3 over ≥ {wider} GPUs")
    for key in ("tensor", "pipeline"):
        current = getattr(layout, key)
        grown = next((c for d in _doublings(current * 2, max(gpus_per_node, model.layers))
                      if (c := fits(**{key: d, "gpus": layout.gpus // current * d}))), None)
        if grown is not None:
            found.append(f"{key}: {getattr(grown, key)} ({grown.gpus} GPUs)")
    if not layout.activation_checkpointing and fits(activation_checkpointing=True):
        found.append("activation_checkpointing: true")
    smaller = next((m for m in range(layout.micro_batch - 1, 0, -1) if fits(micro_batch=m)), None)
    if smaller is not None:
        found.append(f"micro_batch: {smaller}")
    return found


def _doublings(start: int, limit: int) -> list[int]:
    out = []
    while start <= limit:
        out.append(start)
        start *= 2
    return out

