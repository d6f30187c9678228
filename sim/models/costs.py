"""What one request of a built-in model costs, counted analytically from its architecture, op by op."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.models.archs import MlpArch, ResNetArch, TransformerArch, builtin_arch

TOKEN_ID_BYTES = 8  # int64 token ids, as torch embeddings take them
OP_KINDS = ("matmul", "conv", "attention", "elementwise")


@dataclass(frozen=True)
class OpCost:
    """One op eager PyTorch launches: its work per request and the weights it reads once per batch."""

    kind: str  # one of OP_KINDS
    flops: float  # per request
    weight_elems: int  # parameters and buffers read once per batch
    activation_elems: float  # per request: elements read and written once


@dataclass(frozen=True)
class ModelCost:
    """What one request (one sample of the batch) costs, counted from the architecture.

    ``flops`` counts 2 per multiply-add of matmuls, convolutions and attention (as
    ``torch.utils.flop_counter`` does); ``activation_elems`` is the elements every op reads and
    writes once; ``kernels`` the ops eager PyTorch launches per forward (independent of batch), each
    described in ``ops`` (the per-op roofline in ``sim.profiles.roofline`` walks them).
    """

    parameters: int
    buffers: int  # float buffers saved with the weights (BatchNorm running statistics)
    flops: float
    activation_elems: float
    peak_activation_elems: float  # largest set of activations alive at once
    input_bytes: int  # host -> device per request (float inputs in the model dtype)
    output_elems: int  # device -> host per request
    kernels: int
    float_input: bool = True  # False: token ids (int64) whatever the dtype
    ops: tuple[OpCost, ...] = ()


def model_cost(name: str, seq_len: int | None = None) -> ModelCost:
    """Analytic :class:`ModelCost` of a built-in model (inputs counted in fp32 bytes for floats)."""
    arch = builtin_arch(name, seq_len)
    if isinstance(arch, MlpArch):
        return _mlp_cost(arch)
    if isinstance(arch, ResNetArch):
        return _resnet_cost(arch)
    return _transformer_cost(arch)


def _totals(ops: list[OpCost], **fields) -> ModelCost:
    """A :class:`ModelCost` whose flops, activation traffic and kernel count are the sums over ``ops``."""
    return ModelCost(flops=float(sum(o.flops for o in ops)), activation_elems=float(sum(o.activation_elems for o in ops)),
                     kernels=len(ops), ops=tuple(ops), **fields)


def _mlp_cost(a: MlpArch) -> ModelCost:
    dims = (a.in_features, *a.hidden, a.out_features)
    pairs = list(zip(dims[:-1], dims[1:], strict=True))
    ops = []
    for i, o in pairs:
        ops.append(OpCost("matmul", 2 * i * o, i * o + o, i + o))
        ops.append(OpCost("elementwise", 0, 0, 2 * o))  # ReLU (the sigmoid last)
    if not a.sigmoid:
        ops.pop()
    return _totals(ops, parameters=sum(i * o + o for i, o in pairs), buffers=0,
                   peak_activation_elems=float(max(i + o for i, o in pairs)), input_bytes=4 * a.in_features,
                   output_elems=a.out_features)


class _Counter:
    """Walks a convolutional network, adding up parameters and buffers and listing its ops."""

    def __init__(self) -> None:
        self.params = self.buffers = 0
        self.peak = 0.0
        self.ops: list[OpCost] = []

    def op(self, in_elems: float, out_elems: float, macs: float = 0.0, params: int = 0, buffers: int = 0,
           kind: str = "elementwise") -> None:
        self.params += params
        self.buffers += buffers
        self.peak = max(self.peak, in_elems + out_elems)
        self.ops.append(OpCost(kind, 2 * macs, params + buffers, in_elems + out_elems))

    def conv_bn(self, c_in: int, c_out: int, k: int, stride: int, size: int) -> int:
        out = math.ceil(size / stride)
        self.op(c_in * size * size, c_out * out * out, c_out * out * out * c_in * k * k, c_out * c_in * k * k,
                kind="conv")
        # BatchNorm: weight and bias, and the running mean and variance as buffers
        self.op(c_out * out * out, c_out * out * out, params=2 * c_out, buffers=2 * c_out)
        return out


def _resnet_cost(a: ResNetArch) -> ModelCost:
    c = _Counter()
    size = c.conv_bn(3, a.width, 7, 2, a.image_size)
    c.op(a.width * size**2, a.width * size**2)  # ReLU
    c.op(a.width * size**2, a.width * (size // 2) ** 2)  # 3x3 max pool, stride 2
    size //= 2
    c_in = a.width
    for stage, n_blocks in enumerate(a.blocks):
        width = a.width * 2**stage
        for block in range(n_blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            c_out = width * a.expansion
            c.conv_bn(c_in, width, 1, 1, size)
            c.op(width * size**2, width * size**2)  # ReLU
            out = c.conv_bn(width, width, 3, stride, size)
            c.op(width * out**2, width * out**2)  # ReLU
            c.conv_bn(width, c_out, 1, 1, out)
            if block == 0:
                c.conv_bn(c_in, c_out, 1, stride, size)  # projection shortcut
            c.op(2 * c_out * out**2, c_out * out**2)  # residual add
            c.op(c_out * out**2, c_out * out**2)  # ReLU
            c_in, size = c_out, out
    c.op(c_in * size**2, c_in)  # global average pool
    c.op(c_in, a.num_classes, c_in * a.num_classes, c_in * a.num_classes + a.num_classes, kind="matmul")  # fc
    return _totals(c.ops, parameters=c.params, buffers=c.buffers, peak_activation_elems=c.peak,
                   input_bytes=4 * 3 * a.image_size**2, output_elems=a.num_classes)


def _layer_ops(a: TransformerArch) -> list[OpCost]:
    """One block's ten ops: qkv, fused attention, out projection, add, LayerNorm, the feed-forward
    (matmul, activation, matmul), add, LayerNorm (pre-norm blocks run the same ops in another order)."""
    d, ff, L = a.d_model, a.d_ff, a.seq_len
    return [OpCost("matmul", 2 * L * d * 3 * d, 3 * d * d + 3 * d, 4 * L * d),
            OpCost("attention", 4 * L * L * d, 0, 4 * L * d),  # QK^T and AV, fused: reads q, k, v, writes out
            OpCost("matmul", 2 * L * d * d, d * d + d, 2 * L * d),
            OpCost("elementwise", 0, 0, 3 * L * d), OpCost("elementwise", 0, 2 * d, 2 * L * d),
            OpCost("matmul", 2 * L * d * ff, d * ff + ff, L * (d + ff)), OpCost("elementwise", 0, 0, 2 * L * ff),
            OpCost("matmul", 2 * L * ff * d, ff * d + d, L * (d + ff)),
            OpCost("elementwise", 0, 0, 3 * L * d), OpCost("elementwise", 0, 2 * d, 2 * L * d)]


def _transformer_cost(a: TransformerArch) -> ModelCost:
    d, ff, n, L = a.d_model, a.d_ff, a.n_layers, a.seq_len
    layer_params = (3 * d * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d) + 2 * 2 * d
    layer_peak = max(L * (d + ff), a.n_heads * L * L + 3 * L * d)  # FFN hidden, or unfused scores
    gather = OpCost("elementwise", 0, 0, L + L * d)  # token ids in, embedding rows out
    if a.causal:  # positions added; tied LM head on the last position only, after a final LayerNorm
        params = a.vocab_size * d + a.max_positions * d + n * layer_params + 2 * d
        head = [OpCost("elementwise", 0, 2 * d, 2 * d),
                OpCost("matmul", 2 * d * a.vocab_size, a.vocab_size * d, d + a.vocab_size)]
        front, out = [gather, OpCost("elementwise", 0, 0, 3 * L * d)], a.vocab_size
    else:  # an encoder classifying the first token
        params = a.vocab_size * d + n * layer_params + d * a.num_labels + a.num_labels
        front, head, out = [gather], [], a.num_labels
        if a.bert_embeddings:  # BERT: + position and token-type embeddings, then a LayerNorm
            params += (a.max_positions + a.type_vocab_size) * d + 2 * d
            front += [OpCost("elementwise", 0, 0, 3 * L * d), OpCost("elementwise", 0, d, 2 * L * d),
                      OpCost("elementwise", 0, 2 * d, 2 * L * d)]
        if a.pooler:  # tanh pooler on the first token
            params += d * d + d
            head += [OpCost("matmul", 2 * d * d, d * d + d, 2 * d), OpCost("elementwise", 0, 0, 2 * d)]
        head.append(OpCost("matmul", 2 * d * a.num_labels, d * a.num_labels + a.num_labels, d + a.num_labels))
    ops = front + _layer_ops(a) * n + head
    return _totals(ops, parameters=params, buffers=0, peak_activation_elems=float(layer_peak),
                   input_bytes=TOKEN_ID_BYTES * L, output_elems=out, float_input=False)
