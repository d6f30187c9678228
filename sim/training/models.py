"""What a model weighs and costs to train, counted from its architecture (one description per model).

A :class:`TrainedModel` is either a transformer (:class:`TransformerShape`: every shipped transformer,
the Llama family of ``sim.models.llm_archs`` and the encoder/decoder built-ins of ``sim.models.archs``,
or one described in a plan file) or a *generic* model (the MLPs and ResNet-50), of which only the
parameter count, the forward FLOPs and an activation estimate are known. Tensor parallelism and
activation checkpointing are modelled for transformers only.

Activations follow Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models"
(2022, eq. 1-2): per layer and micro-batch of ``b`` sequences of ``s`` tokens, 16-bit activations,

    attention  s b h (7 + 4 kv/h) + 5 a s^2 b     (the s^2 terms: scores, softmax, dropout; gone with flash attention)
    MLP        s b (3h + 4f)  or  s b (3h + 8f) gated (SwiGLU: gate, up, their activation and product)
    norms      4 s b h

which is the paper's ``34 s b h + 5 a s^2 b`` for a GPT layer (``f = 4h``, ``kv = h``). Under tensor
parallelism ``10 s b h`` of it (the norms' and the two block inputs, the dropout masks) is kept whole on
every rank unless sequence parallelism splits it too; the rest is split ``t`` ways.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ProfileError, ScenarioError, bad_value
from sim.models.archs import BUILTIN_ARCHS, TransformerArch, builtin_arch
from sim.models.costs import model_cost
from sim.models.llm_archs import LLM_ARCHS, DecoderLlmArch

LOSS_BYTES = 4  # logits are turned into the loss in fp32
REPLICATED_PER_LAYER = 10  # s b h of a layer every tensor-parallel rank keeps whole (without sequence parallel)


@dataclass(frozen=True)
class TransformerShape:
    layers: int
    hidden: int
    heads: int
    kv_dim: int  # width of K (and V): hidden without grouped-query attention
    ffn: int
    vocab: int
    seq_len: int
    gated_mlp: bool  # SwiGLU (Llama) rather than one activation between two matmuls
    lm_head: bool  # a language-model head over every position (decoders); encoders classify one token

    def layer_activation_elems(self, micro_batch: int, flash_attention: bool) -> tuple[float, float]:
        """``(replicated, split)``: a layer's saved activations in elements (the counts above are bytes of
        16-bit values, halved), the part every tensor-parallel rank keeps whole and the part split."""
        s, b, h, f = self.seq_len, micro_batch, self.hidden, self.ffn
        attention = s * b * h * (7 + 4 * self.kv_dim / h) + (0 if flash_attention else 5 * self.heads * s * s * b)
        mlp = s * b * (3 * h + (8 if self.gated_mlp else 4) * f)
        total = attention + mlp + 4 * s * b * h
        replicated = REPLICATED_PER_LAYER * s * b * h
        return replicated / 2, (total - replicated) / 2


@dataclass(frozen=True)
class TrainedModel:
    """A model as training sees it: its weights, where they sit, its FLOPs and its activations."""

    name: str
    parameters: int
    layers: int  # pipeline stages split these
    embedding_parameters: int  # input embedding (first stage) and an untied head (last stage), together
    forward_flops_per_sample: float
    transformer: TransformerShape | None = None
    activation_elems_per_sample: float = 0.0  # generic models only (an estimate, see generic_model)

    @property
    def layer_parameters(self) -> float:
        return (self.parameters - self.embedding_parameters) / self.layers

    @property
    def tokens_per_sample(self) -> int:
        return self.transformer.seq_len if self.transformer else 1

    @property
    def training_flops_per_sample(self) -> float:
        """Forward and backward: 3 × forward (the backward computes gradients of inputs and of weights)."""
        return 3 * self.forward_flops_per_sample


def shipped_models() -> list[str]:
    return [*LLM_ARCHS, *BUILTIN_ARCHS]


def trained_model(name: str, seq_len: int | None = None) -> TrainedModel:
    """A shipped architecture by name (``llama-2-7b``, ``bert-base``, ``mlp``...), at ``seq_len`` tokens."""
    if name in LLM_ARCHS:
        return llm_model(LLM_ARCHS[name], seq_len or LLM_ARCHS[name].max_positions)
    if name in BUILTIN_ARCHS:
        arch = BUILTIN_ARCHS[name]
        if isinstance(arch, TransformerArch):
            return builtin_transformer(name, seq_len)
        if seq_len is not None:
            raise ScenarioError(bad_value("data.seq_len", seq_len, f"{name} has no sequence length (give samples)"))
        return generic_model(name)
    raise ScenarioError(bad_value("model.name", name, f"a shipped model ({', '.join(shipped_models())}), or your own "
                                  "with model.parameters"))


def transformer_model(name: str, shape: TransformerShape, parameters: int, embedding_parameters: int) -> TrainedModel:
    """A transformer; forward FLOPs per sample ``s (2 N_layers + 2 h V [LM head]) + 4 L s^2 h`` (PaLM's count)."""
    s = shape.seq_len
    matmul = 2 * (parameters - embedding_parameters) + (2 * shape.hidden * shape.vocab if shape.lm_head else 0)
    flops = s * matmul + 4 * shape.layers * s * s * shape.hidden
    return TrainedModel(name, parameters, shape.layers, embedding_parameters, float(flops), shape)


def llm_model(arch: DecoderLlmArch, seq_len: int) -> TrainedModel:
    shape = TransformerShape(arch.layers, arch.hidden, arch.heads, arch.kv_dim, arch.ffn, arch.vocab, seq_len,
                             gated_mlp=True, lm_head=True)
    return transformer_model(arch.name, shape, arch.parameters, 2 * arch.embedding_params)


def builtin_transformer(name: str, seq_len: int | None) -> TrainedModel:
    try:
        arch = builtin_arch(name, seq_len)
    except ProfileError as exc:  # the architecture's own range check
        raise ScenarioError(str(exc).replace("seq_len", "data.seq_len", 1)) from None
    assert isinstance(arch, TransformerArch)
    shape = TransformerShape(arch.n_layers, arch.d_model, arch.n_heads, arch.d_model, arch.d_ff, arch.vocab_size,
                             arch.seq_len, gated_mlp=False, lm_head=arch.causal)
    embeddings = arch.vocab_size * arch.d_model + arch.max_positions * arch.d_model
    return transformer_model(name, shape, model_cost(name, seq_len).parameters, embeddings)


def generic_model(name: str) -> TrainedModel:
    """A built-in MLP or CNN: parameters and forward FLOPs counted op by op (``sim.models.costs``); the
    saved activations estimated as half of what its ops read and write (each keeps about its input for
    the backward pass); its layers are its weight-carrying ops."""
    cost = model_cost(name)
    layers = sum(1 for op in cost.ops if op.kind in ("matmul", "conv"))
    return TrainedModel(name, cost.parameters, layers, 0, cost.flops,
                        activation_elems_per_sample=cost.activation_elems / 2)
