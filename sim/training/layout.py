"""A parallel layout: how ``N`` GPUs split one training job, and where its ranks sit on nodes.

``N = data × tensor × pipeline``. Ranks are numbered as Megatron numbers them: tensor-parallel ranks
innermost (neighbours on one node's NVLink), then pipeline stages, then data-parallel replicas. Each
data-parallel rank runs ``accumulation = global_batch / (data × micro_batch)`` micro-batches per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.errors import ScenarioError
from sim.training.models import TrainedModel

MIB = 2**20


@dataclass(frozen=True)
class Layout:
    gpus: int
    tensor: int = 1
    pipeline: int = 1
    zero: int = 0
    micro_batch: int = 1
    global_batch: int = 1
    activation_checkpointing: bool = False
    sequence_parallel: bool = True
    flash_attention: bool = True
    bucket_bytes: float = 25 * MIB

    @property
    def data(self) -> int:
        return self.gpus // (self.tensor * self.pipeline)

    @property
    def accumulation(self) -> int:
        """Micro-batches each data-parallel rank runs per optimiser step."""
        return self.global_batch // (self.data * self.micro_batch)

    def describe(self) -> str:
        parts = [f"DP {self.data}"] + [f"{k} {v}" for k, v in (("TP", self.tensor), ("PP", self.pipeline)) if v > 1]
        parts.append(f"ZeRO-{self.zero}" if self.zero else "DDP")
        if self.activation_checkpointing:
            parts.append("ckpt")
        return " · ".join(parts) + f" · mb {self.micro_batch}×{self.accumulation}"


@dataclass(frozen=True)
class Placement:
    """Where a layout's ranks sit: how many of one data-parallel group share a node, how many nodes."""

    gpus_per_node: int
    nodes: int
    data_ranks_per_node: int  # of one data-parallel group
    data_nodes: int  # nodes one data-parallel group spans
    pipeline_across_nodes: bool  # neighbouring stages talk over the network


def place(layout: Layout, gpus_per_node: int) -> Placement:
    inner = layout.tensor * layout.pipeline
    per_node = max(1, min(layout.data, gpus_per_node // inner)) if inner <= gpus_per_node else 1
    stage_span = layout.tensor * layout.pipeline
    return Placement(gpus_per_node, math.ceil(layout.gpus / gpus_per_node), per_node,
                     math.ceil(layout.data / per_node), stage_span > gpus_per_node)


def shape_problem(layout: Layout) -> str | None:
    """Why the numbers of a layout do not add up (whatever the model), in one line; None when they do."""
    t, p = layout.tensor, layout.pipeline
    if layout.gpus % (t * p):
        return (f"parallel.tensor × parallel.pipeline = {t} × {p} must divide cluster.gpus = {layout.gpus} "
                "(data parallel = gpus / (tensor × pipeline))")
    if layout.global_batch % (layout.data * layout.micro_batch):
        return (f"batch.global_batch = {layout.global_batch} must be a multiple of data-parallel ranks × "
                f"micro_batch = {layout.data} × {layout.micro_batch} = {layout.data * layout.micro_batch}")
    return None


def layout_problem(layout: Layout, model: TrainedModel, gpus_per_node: int) -> str | None:
    """Why a layout cannot run this model, in one line naming the key; None when it can."""
    problem = shape_problem(layout)
    if problem:
        return problem
    t, p = layout.tensor, layout.pipeline
    shape = model.transformer
    if t > 1 and shape is None:
        return f"parallel.tensor = {t}: tensor parallelism is modelled for transformers; {model.name} is not one"
    if t > 1 and (shape.heads % t or shape.hidden % t):
        return f"parallel.tensor = {t}: must divide the {shape.heads} attention heads of {model.name}"
    if t > gpus_per_node:
        return f"parallel.tensor = {t}: tensor parallelism stays inside a node of {gpus_per_node} GPUs"
    if p > model.layers:
        return f"parallel.pipeline = {p}: at most the {model.layers} layers of {model.name}"
    if layout.activation_checkpointing and shape is None:
        return (f"parallel.activation_checkpointing = true: modelled for transformers; {model.name} is not one")
    return None


def check_layout(layout: Layout, model: TrainedModel, gpus_per_node: int) -> None:
    problem = layout_problem(layout, model, gpus_per_node)
    if problem:
        raise ScenarioError(problem)
