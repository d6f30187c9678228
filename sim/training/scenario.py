"""A training plan: the frozen, validated description of one training job (``kind: training`` YAML).

Sections: ``model``, ``data``, ``batch``, ``cluster``, ``parallel``, ``compute``, ``network``,
``reliability``, and for planner mode ``deadline_hours`` and ``plan``. Every field carries its unit in its
name and a help text; docs/training.md documents them. Files are read like scenarios (bounded, strict
YAML, one-line errors naming the key, the value and what is allowed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from sim.errors import ScenarioError
from sim.scenario.base import NonNegFloat, PositiveFloat, Section
from sim.scenario.examples import scenario_path
from sim.scenario.yaml_reader import read_text_file, read_yaml
from sim.training.layout import Layout, shape_problem
from sim.training.states import OPTIMIZERS, PRECISIONS

MAX_GPUS = 1_000_000


class Model(Section):
    name: str = Field(description="A shipped architecture (llama-2-7b, llama-3-8b, bert-base, decoder, mlp, ...) "
                      "or your own model's name with its parameters below.")
    parameters: PositiveFloat | None = Field(default=None, description="Your own model: its parameter count.")
    layers: int | None = Field(default=None, ge=1, description="Your own model: its layers (pipeline stages split "
                               "them); a transformer also needs hidden, heads, ffn and vocab.")
    hidden: int | None = Field(default=None, ge=1, description="Your own transformer: the model width.")
    heads: int | None = Field(default=None, ge=1, description="Your own transformer: attention heads.")
    kv_heads: int | None = Field(default=None, ge=1, description="Your own transformer: key/value heads "
                                 "(grouped-query attention; default: heads).")
    ffn: int | None = Field(default=None, ge=1, description="Your own transformer: the MLP's inner width.")
    vocab: int | None = Field(default=None, ge=1, description="Your own transformer: vocabulary size.")
    gated_mlp: bool = Field(default=True, description="Your own transformer: a SwiGLU MLP (gate, up, down).")
    forward_flops_per_sample: PositiveFloat | None = Field(default=None, description="Your own model without a "
                                                           "transformer shape: forward FLOPs per sample.")

    @model_validator(mode="after")
    def _own_or_shipped(self) -> Model:
        shape = ("hidden", "heads", "ffn", "vocab")
        given = [k for k in shape if getattr(self, k) is not None]
        if given and len(given) < len(shape):
            missing = [k for k in shape if getattr(self, k) is None]
            raise ValueError(f"a transformer needs hidden, heads, ffn and vocab together; missing {', '.join(missing)}")
        return self


class Data(Section):
    samples: PositiveFloat | None = Field(default=None, description="Samples (sequences, images, rows) per epoch.")
    tokens: PositiveFloat | None = Field(default=None, description="Tokens per epoch (transformers: "
                                         "samples = tokens / seq_len).")
    seq_len: int | None = Field(default=None, ge=1, le=1_048_576, description="Tokens per sample (default: the "
                                "model's trained context).")
    epochs: PositiveFloat = Field(default=1.0, description="Passes over the data.")

    @model_validator(mode="after")
    def _one_size(self) -> Data:
        if (self.samples is None) == (self.tokens is None):
            raise ValueError("give one of samples or tokens (how much data one epoch is)")
        return self


class Batch(Section):
    global_batch: int = Field(ge=1, le=2**31, description="Samples per optimiser step, over all data-parallel "
                              "ranks and accumulation steps.")
    micro_batch: int = Field(default=1, ge=1, le=65536, description="Samples one GPU runs forward and backward "
                             "at once.")


class Cluster(Section):
    gpu: str = Field(description="A catalog GPU (sim/data/gpus.yaml: H100-SXM, A100-80GB, ...), or `profile` for "
                     "the device compute.profile was measured on.")
    gpus: int = Field(ge=1, le=MAX_GPUS, description="GPUs in the job: data × tensor × pipeline parallel.")
    gpus_per_node: int | None = Field(default=None, ge=1, le=1024, description="GPUs that share a node's fast links "
                                      "(default: the catalog's node; a profile: its measured world size).")
    usd_per_gpu_hour: NonNegFloat | None = Field(default=None, description="Price per GPU-hour (default: the "
                                                 "catalog's; needed for a profiled device).")


class Parallel(Section):
    tensor: int = Field(default=1, ge=1, le=1024, description="Tensor-parallel degree (Megatron): each layer split "
                        "over this many GPUs of one node.")
    pipeline: int = Field(default=1, ge=1, le=1024, description="Pipeline stages (1F1B schedule).")
    zero: Literal[0, 1, 2, 3] = Field(default=0, description="ZeRO stage: 0 = DDP (everything replicated); "
                                      "1 shards optimiser states, 2 also gradients, 3 (FSDP) also parameters.")
    activation_checkpointing: bool = Field(default=False, description="Keep only each layer's input and "
                                           "recompute the rest in the backward pass (one more forward).")
    sequence_parallel: bool = Field(default=True, description="With tensor > 1: split the norms' and dropouts' "
                                    "activations too (Megatron sequence parallelism).")
    flash_attention: bool = Field(default=True, description="Attention without stored s² scores.")
    bucket_mb: PositiveFloat = Field(default=25.0, description="Gradient bucket size, MiB (DDP's bucket_cap_mb).")


class Compute(Section):
    mfu: float = Field(default=0.4, gt=0, le=1, description="Model FLOPs utilisation for the roofline estimate: "
                       "the share of the GPU's dense peak a training step reaches.")
    profile: str | None = Field(default=None, description="A training profile (capsim calibrate --mode train) "
                                "whose measured step times replace the estimate.")


class Network(Section):
    efficiency: float = Field(default=0.8, gt=0, le=1, description="Share of the catalog's link bandwidth a "
                              "collective reaches (NCCL bus bandwidth / datasheet).")
    intra_node_latency_s: NonNegFloat = Field(default=5e-6, description="Latency of one step of a ring inside a "
                                              "node, seconds.")
    inter_node_latency_s: NonNegFloat = Field(default=15e-6, description="Latency of one step of a ring across "
                                              "nodes, seconds.")


class Reliability(Section):
    gpu_mtbf_hours: PositiveFloat | None = Field(default=50_000.0, description="Mean time between job-stopping "
                                                 "failures per GPU, hours; null = no failures.")
    checkpoint_s: NonNegFloat | None = Field(default=None, description="Time to write one checkpoint, seconds "
                                             "(default: its bytes / checkpoint_write_bytes_per_s per node).")
    checkpoint_write_bytes_per_s: PositiveFloat = Field(default=2e9, description="Checkpoint write bandwidth "
                                                        "per node, bytes/s.")
    checkpoint_interval_s: PositiveFloat | None = Field(default=None, description="Work between checkpoints, "
                                                        "seconds (default: the interval minimising expected time).")
    restart_s: NonNegFloat = Field(default=600.0, description="From a failure to training again: reschedule, "
                                   "restart, load the checkpoint, seconds.")
    straggler_cv: NonNegFloat = Field(default=0.0, le=1, description="Coefficient of variation of one rank's "
                                      "compute time; a synchronous step waits for the slowest rank.")


class PlanSpace(Section):
    gpu_types: list[str] = Field(default_factory=list, description="Catalog GPUs to consider (default: all).")
    gpus: list[int] = Field(default_factory=list, description="GPU counts to consider (default: powers of two "
                            "and whole nodes up to max_gpus).")
    max_gpus: int = Field(default=1024, ge=1, le=MAX_GPUS, description="Largest GPU count considered.")


class TrainingPlan(Section):
    kind: Literal["training"] = Field(description="Marks a training plan (capsim train-plan), not a serving scenario.")
    name: str = Field(default="training", description="Label used in tables and file names.")
    description: str = Field(default="", description="What the plan models, in words.")
    model: Model
    data: Data
    batch: Batch
    precision: Literal[PRECISIONS] = Field(default="bf16-mixed", description="fp32, or mixed precision: 16-bit "
                                           "weights and gradients with fp32 master weights.")
    optimizer: Literal[OPTIMIZERS] = Field(default="adam", description="Adam(W): two fp32 moments per parameter; "
                                           "sgd: none; sgd-momentum: one.")
    cluster: Cluster
    parallel: Parallel = Field(default_factory=Parallel)
    compute: Compute = Field(default_factory=Compute)
    network: Network = Field(default_factory=Network)
    reliability: Reliability = Field(default_factory=Reliability)
    deadline_hours: PositiveFloat | None = Field(default=None, description="Planner mode: the job must finish "
                                                 "within this many hours; the cheapest configuration that does.")
    plan: PlanSpace | None = Field(default=None, description="Planner mode: what to search.")
    base_dir: str = Field(default=".", exclude=True)

    @model_validator(mode="after")
    def _layout_multiplies(self) -> TrainingPlan:
        p = self.parallel
        problem = shape_problem(Layout(gpus=self.cluster.gpus, tensor=p.tensor, pipeline=p.pipeline,
                                       micro_batch=self.batch.micro_batch, global_batch=self.batch.global_batch))
        if problem:
            raise ValueError(problem)
        return self


def load_training_plan(ref: str | Path) -> TrainingPlan:
    """Read and validate a training plan file, or a shipped example by name (``training/llama_7b``)."""
    path = scenario_path(ref)
    data = read_yaml(read_text_file(path, "a training plan"), str(path), "a training plan")
    return training_plan_from_dict(data, path.resolve().parent, str(path))


def training_plan_from_dict(data: object, base_dir: str | Path = ".", source: str = "training plan") -> TrainingPlan:
    from sim.scenario.load import (
        describe,  # the scenario reader's error lines; imported here, it imports a lot
    )

    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a training plan is a mapping of sections, got {type(data).__name__}")
    if data.get("kind") != "training":
        raise ScenarioError(f"{source}: kind = {data.get('kind')!r}: a training plan says kind: training "
                            "(a serving scenario runs with capsim simulate)")
    try:
        return TrainingPlan.model_validate({**data, "base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {describe(exc, TrainingPlan)}") from None


def resolve_path(plan: TrainingPlan, ref: str) -> Path:
    path = Path(ref)
    return path if path.is_absolute() else Path(plan.base_dir) / path
