"""Does a model fit a replica's GPUs, and how much KV cache is left: the memory plan of one replica.

Per GPU, as vLLM budgets it: ``gpu_memory_utilization × GPU memory`` must hold the GPU's share of the
weights, the activation peak of the largest iteration and the runtime's own memory; what is left is
the KV cache, cut into blocks. A replica spans ``tensor_parallel × pipeline_parallel`` GPUs: tensor
parallelism splits every layer (and the vocabulary of the embedding and the head) across TP GPUs,
pipeline parallelism gives each stage ``ceil(layers / PP)`` layers (the first stage also holds the
embedding, the last the head; the larger of the two is counted). The activation peak and the runtime
reserve are estimates, stated in :data:`RUNTIME_RESERVE_BYTES` and :func:`activation_peak_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ScenarioError
from sim.hardware.gpus import DTYPE_BYTES, Gpu
from sim.llm.kv_cache import blocks_for, pool_blocks
from sim.models.llm_archs import DecoderLlmArch

# CUDA context, NCCL buffers and other memory outside PyTorch's allocator, per GPU. Assumed, not measured:
# vLLM logs 0.2-1.5 GiB of "non-torch memory" at start-up on H100s; this takes 1 GiB.
RUNTIME_RESERVE_BYTES = 1 << 30
LOGIT_BYTES = 4  # logits are sampled in fp32


@dataclass(frozen=True)
class MemoryPlan:
    """Memory of one GPU of a replica, and the KV cache of the replica (bytes and tokens)."""

    model: str
    dtype: str
    gpu: str
    tensor_parallel: int
    pipeline_parallel: int
    gpu_memory_bytes: int
    budget_bytes: float  # gpu_memory_utilization × GPU memory
    weight_bytes: int  # the whole model
    weight_bytes_per_gpu: int  # the largest stage's share on one GPU
    activation_bytes_per_gpu: int
    runtime_bytes_per_gpu: int
    kv_bytes_per_token_per_gpu: int
    block_size: int
    kv_blocks: int

    @property
    def gpus(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def kv_bytes_per_gpu(self) -> float:
        return self.budget_bytes - self.weight_bytes_per_gpu - self.activation_bytes_per_gpu - self.runtime_bytes_per_gpu

    @property
    def kv_tokens(self) -> int:
        """Tokens the replica's KV cache holds (whole blocks)."""
        return self.kv_blocks * self.block_size


def weight_bytes_per_gpu(arch: DecoderLlmArch, dtype_bytes: int, tp: int, pp: int) -> int:
    """The largest pipeline stage's weights, split over its TP GPUs."""
    layers = arch.stage_layers(pp) * arch.layer_params
    ends = arch.embedding_copies * arch.embedding_params + arch.hidden if pp == 1 else arch.embedding_params + arch.hidden
    return (layers + ends) * dtype_bytes // tp


def activation_peak_bytes(arch: DecoderLlmArch, dtype_bytes: int, tp: int, max_num_batched_tokens: int,
                          max_num_seqs: int) -> int:
    """Estimated activation peak of the largest iteration on one GPU: one layer's live tensors for
    ``max_num_batched_tokens`` tokens (hidden state and residual; Q, K, V; the MLP's gate, up and their
    product, split over TP) plus the fp32 logits of ``max_num_seqs`` sampled tokens."""
    per_token = 2 * arch.hidden + (arch.hidden + 2 * arch.kv_dim + 3 * arch.ffn) // tp
    return max_num_batched_tokens * per_token * dtype_bytes + max_num_seqs * arch.vocab * LOGIT_BYTES


def plan_memory(arch: DecoderLlmArch, gpu: Gpu, dtype: str, tp: int, pp: int, *, gpu_memory_utilization: float,
                block_size: int, max_num_batched_tokens: int, max_num_seqs: int) -> MemoryPlan:
    """The memory plan; ``kv_blocks`` is 0 when the weights and activations leave no room."""
    width = DTYPE_BYTES[dtype]
    plan = MemoryPlan(
        model=arch.name, dtype=dtype, gpu=gpu.key, tensor_parallel=tp, pipeline_parallel=pp,
        gpu_memory_bytes=gpu.memory_bytes, budget_bytes=gpu_memory_utilization * gpu.memory_bytes,
        weight_bytes=arch.parameters * width, weight_bytes_per_gpu=weight_bytes_per_gpu(arch, width, tp, pp),
        activation_bytes_per_gpu=activation_peak_bytes(arch, width, tp, max_num_batched_tokens, max_num_seqs),
        runtime_bytes_per_gpu=RUNTIME_RESERVE_BYTES,
        kv_bytes_per_token_per_gpu=2 * arch.stage_layers(pp) * (arch.kv_dim // tp) * width,
        block_size=block_size, kv_blocks=0)
    blocks = pool_blocks(plan.kv_bytes_per_gpu, plan.kv_bytes_per_token_per_gpu, block_size)
    return MemoryPlan(**{**plan.__dict__, "kv_blocks": blocks})


def fitting_plan(arch: DecoderLlmArch, gpu: Gpu, dtype: str, tp: int, pp: int, *, gpu_memory_utilization: float,
                 block_size: int, max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int,
                 kv_blocks_override: int | None = None) -> MemoryPlan:
    """The memory plan, or one line saying why the model does not fit (and which TP would). The cache
    must hold one sequence of ``max_model_len`` tokens (as vLLM checks at start-up)."""
    arch.check_parallel(tp, pp)
    knobs = dict(gpu_memory_utilization=gpu_memory_utilization, block_size=block_size,
                 max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs)
    plan = plan_memory(arch, gpu, dtype, tp, pp, **knobs)
    if kv_blocks_override is not None and plan.kv_blocks:
        if kv_blocks_override < blocks_for(max_model_len, block_size):
            raise ScenarioError(
                f"llm.num_gpu_blocks_override = {kv_blocks_override}: at least {blocks_for(max_model_len, block_size)}"
                f", the blocks of one sequence of max_model_len = {max_model_len} tokens")
        return MemoryPlan(**{**plan.__dict__, "kv_blocks": kv_blocks_override})
    if plan.kv_blocks >= blocks_for(max_model_len, block_size):
        return plan
    fits = [t for t in range(tp + 1, arch.kv_heads + 1) if arch.kv_heads % t == 0 and arch.heads % t == 0
            and plan_memory(arch, gpu, dtype, t, pp, **knobs).kv_blocks >= blocks_for(max_model_len, block_size)]
    hint = (f"tensor_parallel = {fits[0]} fits" if fits else
            f"no tensor_parallel up to {arch.kv_heads} fits: raise pipeline_parallel or pick a larger GPU")
    gb = 1e9
    if plan.kv_blocks == 0:
        raise ScenarioError(
            f"llm.tensor_parallel = {tp}: {arch.name} {dtype} needs {plan.weight_bytes / gb:.1f} GB of weights, "
            f"{plan.weight_bytes_per_gpu / gb:.1f} GB per GPU at tensor_parallel × pipeline_parallel = {tp} × {pp}, "
            f"plus {(plan.activation_bytes_per_gpu + plan.runtime_bytes_per_gpu) / gb:.1f} GB of activations and "
            f"runtime; {gpu.key} gives {gpu_memory_utilization:g} × {gpu.memory_bytes / gb:.1f} GB = "
            f"{plan.budget_bytes / gb:.1f} GB per GPU: does not fit; {hint}")
    raise ScenarioError(
        f"llm.max_model_len = {max_model_len}: one sequence may hold {max_model_len:,} tokens, but the KV cache "
        f"of {arch.name} on {tp} × {pp} {gpu.key} holds {plan.kv_tokens:,} ({plan.kv_blocks:,} blocks of "
        f"{block_size}); lower max_model_len to at most {plan.kv_tokens:,}, or {hint}")
