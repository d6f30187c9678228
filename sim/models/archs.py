"""Architectures of the built-in models, described once (no torch).

``calibration/`` builds its torch models from these descriptions and ``sim.models.costs`` counts
their parameters, FLOPs and bytes moved from them, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ProfileError, bad_value


@dataclass(frozen=True)
class MlpArch:
    """Tabular fraud-scoring MLP: dense features -> ReLU hidden layers -> one sigmoid score."""

    in_features: int = 256
    hidden: tuple[int, ...] = (1024, 1024, 512)
    out_features: int = 1
    sigmoid: bool = True  # a sigmoid on the output (False: raw logits)


@dataclass(frozen=True)
class ResNetArch:
    """ResNet-50 v1.5 (stride in the 3x3 conv of each bottleneck), ImageNet head."""

    blocks: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    expansion: int = 4
    image_size: int = 224
    num_classes: int = 1000


@dataclass(frozen=True)
class TransformerArch:
    """A transformer over token ids: a BERT-style encoder classifier or a GPT-style decoder."""

    causal: bool
    vocab_size: int
    max_positions: int
    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int
    seq_len: int = 128
    num_labels: int = 2  # encoder: classifier on the pooled first token
    type_vocab_size: int = 2  # encoder only
    bert_embeddings: bool = True  # encoder: word + position + token-type embeddings and a LayerNorm (else words only)
    pooler: bool = True  # encoder: a tanh pooler before the classifier
    activation: str = "gelu"  # feed-forward activation: "gelu" or "relu"


BUILTIN_ARCHS: dict[str, MlpArch | ResNetArch | TransformerArch] = {
    "mlp": MlpArch(),
    "resnet50": ResNetArch(),
    "bert-base": TransformerArch(causal=False, vocab_size=30522, max_positions=512, d_model=768,
                                 n_heads=12, n_layers=12, d_ff=3072),
    "decoder": TransformerArch(causal=True, vocab_size=32000, max_positions=1024, d_model=512,
                               n_heads=8, n_layers=6, d_ff=2048),
    # The two models measured on an H100 with a plain torch loop (sim/data/profiles/h100-*-measured):
    # a wider MLP without the sigmoid, and torch's nn.TransformerEncoder (post-norm, ReLU) over word
    # embeddings only, classifying token 0 without a pooler.
    "mlp-2048": MlpArch(hidden=(2048, 2048, 2048), sigmoid=False),
    "bert-encoder": TransformerArch(causal=False, vocab_size=30522, max_positions=512, d_model=768,
                                    n_heads=12, n_layers=12, d_ff=3072, bert_embeddings=False, pooler=False,
                                    activation="relu"),
}


def builtin_arch(name: str, seq_len: int | None = None) -> MlpArch | ResNetArch | TransformerArch:
    """The architecture of a built-in model, with ``seq_len`` applied to the transformers."""
    if name not in BUILTIN_ARCHS:
        raise ProfileError(bad_value("model", name, f"built-in models are {', '.join(BUILTIN_ARCHS)}"))
    arch = BUILTIN_ARCHS[name]
    if seq_len is None or not isinstance(arch, TransformerArch):
        return arch
    if not 1 <= seq_len <= arch.max_positions:
        raise ProfileError(bad_value("seq_len", seq_len, f"1..{arch.max_positions} for {name}"))
    return TransformerArch(**{**arch.__dict__, "seq_len": seq_len})
