"""Decoder-only LLM architectures (Llama family) and what they weigh, counted from the public configs.

One description per model: the memory fit (``sim.llm.memory``) and the roofline iteration time
(``sim.llm.step_time``) both count parameters, KV-cache bytes and FLOPs from here. The figures are
those of each model's ``config.json`` on Hugging Face (``num_hidden_layers``, ``hidden_size``,
``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``, ``vocab_size``,
``max_position_embeddings``); Llama uses untied input and output embeddings, RMSNorm (one weight
vector, no bias) and a gated MLP (gate, up and down projections).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.errors import ScenarioError, bad_value
from sim.models.archs import BUILTIN_ARCHS


@dataclass(frozen=True)
class DecoderLlmArch:
    """A Llama-style decoder: grouped-query attention, gated MLP, RMSNorm, untied embeddings."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    max_positions: int  # the context length the model was trained for (default llm.max_model_len)
    source: str
    gated_mlp: bool = True  # Llama's gate, up and down projections (False: GPT's up and down)
    tied_embeddings: bool = False  # the output head is the input embedding (one copy of the weights)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        """Width of K (and of V): KV heads × head dimension."""
        return self.kv_heads * self.head_dim

    @property
    def layer_linear_params(self) -> int:
        """Weights of one layer's matmuls: Q and O (hidden²), K and V (hidden × kv_dim), gate, up, down (no
        gate in a GPT-style MLP)."""
        mlp = 3 if self.gated_mlp else 2
        return 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_dim + mlp * self.hidden * self.ffn

    @property
    def layer_params(self) -> int:
        """One layer: its matmuls and its two RMSNorm weight vectors."""
        return self.layer_linear_params + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        """The input embedding (the output head is as large: untied)."""
        return self.vocab * self.hidden

    @property
    def embedding_copies(self) -> int:
        """Input embedding and output head: two matrices, or one when tied."""
        return 1 if self.tied_embeddings else 2

    @property
    def parameters(self) -> int:
        """Layers, input embedding, output head and the final norm."""
        return self.layers * self.layer_params + self.embedding_copies * self.embedding_params + self.hidden

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """K and V of one token over every layer: 2 × layers × kv_heads × head_dim × bytes."""
        return 2 * self.layers * self.kv_dim * dtype_bytes

    def check_parallel(self, tensor_parallel: int, pipeline_parallel: int) -> None:
        """TP must divide the attention heads and the KV heads; PP must not exceed the layers."""
        if self.heads % tensor_parallel or self.kv_heads % tensor_parallel:
            fits = [d for d in range(1, self.kv_heads + 1) if self.kv_heads % d == 0 and self.heads % d == 0]
            raise ScenarioError(bad_value(
                "llm.tensor_parallel", tensor_parallel,
                f"must divide the {self.heads} attention heads and {self.kv_heads} KV heads of {self.name} "
                f"({', '.join(map(str, fits))})"))
        if pipeline_parallel > self.layers:
            raise ScenarioError(bad_value("llm.pipeline_parallel", pipeline_parallel,
                                          f"at most the {self.layers} layers of {self.name}"))

    def stage_layers(self, pipeline_parallel: int) -> int:
        """Layers on the largest pipeline stage."""
        return math.ceil(self.layers / pipeline_parallel)


def _llama(name: str, layers: int, hidden: int, heads: int, kv_heads: int, ffn: int, vocab: int,
           max_positions: int, repo: str) -> DecoderLlmArch:
    return DecoderLlmArch(name, layers, hidden, heads, kv_heads, ffn, vocab, max_positions,
                          f"https://huggingface.co/{repo}/blob/main/config.json")


def _builtin(name: str) -> DecoderLlmArch:
    """capsim's own GPT-style decoder (``sim.models.archs``, run by calibration/nets.py and calibration/
    llm_runtime.py): LayerNorm, a GELU MLP, multi-head attention, a head tied to the embedding. Its biases
    and learned positions (0.6 M of 35.8 M parameters) are not counted."""
    arch = BUILTIN_ARCHS[name]
    return DecoderLlmArch(name, arch.n_layers, arch.d_model, arch.n_heads, arch.n_heads, arch.d_ff, arch.vocab_size,
                          arch.max_positions, "sim/models/archs.py (capsim's built-in decoder)", gated_mlp=False,
                          tied_embeddings=True)


LLM_ARCHS: dict[str, DecoderLlmArch] = {
    arch.name: arch for arch in (
        _llama("llama-2-7b", 32, 4096, 32, 32, 11008, 32000, 4096, "meta-llama/Llama-2-7b-hf"),
        _llama("llama-2-13b", 40, 5120, 40, 40, 13824, 32000, 4096, "meta-llama/Llama-2-13b-hf"),
        _llama("llama-3-8b", 32, 4096, 32, 8, 14336, 128256, 8192, "meta-llama/Meta-Llama-3-8B"),
        _llama("llama-3-70b", 80, 8192, 64, 8, 28672, 128256, 8192, "meta-llama/Meta-Llama-3-70B"),
        _builtin("decoder"),
    )
}


def llm_arch(name: str) -> DecoderLlmArch:
    """A shipped LLM architecture by name (``llama-3-8b``)."""
    if name not in LLM_ARCHS:
        raise ScenarioError(bad_value("llm.model", name, f"one of {', '.join(LLM_ARCHS)}"))
    return LLM_ARCHS[name]
