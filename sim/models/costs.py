"""What one request of a built-in model costs, counted analytically from its architecture."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.models.archs import MlpArch, ResNetArch, TransformerArch, builtin_arch

TOKEN_ID_BYTES = 8  # int64 token ids, as torch embeddings take them

@dataclass(frozen=True)
class ModelCost:
    """What one request (one sample of the batch) costs, counted from the architecture.

    ``flops`` counts 2 per multiply-add of matmuls, convolutions and attention (as
    ``torch.utils.flop_counter`` does); ``activation_elems`` is the elements every op reads and
    writes once; ``kernels`` the ops eager PyTorch launches per forward (independent of batch).
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


def model_cost(name: str, seq_len: int | None = None) -> ModelCost:
    """Analytic :class:`ModelCost` of a built-in model (inputs counted in fp32 bytes for floats)."""
    arch = builtin_arch(name, seq_len)
    if isinstance(arch, MlpArch):
        return _mlp_cost(arch)
    if isinstance(arch, ResNetArch):
        return _resnet_cost(arch)
    return _transformer_cost(arch)


def _mlp_cost(a: MlpArch) -> ModelCost:
    dims = (a.in_features, *a.hidden, a.out_features)
    pairs = list(zip(dims[:-1], dims[1:], strict=True))
    params = sum(i * o + o for i, o in pairs)
    acts = sum(i + o + 2 * o for i, o in pairs)  # linear in+out, then ReLU (sigmoid last) in+out
    return ModelCost(parameters=params, buffers=0, flops=float(sum(2 * i * o for i, o in pairs)),
                     activation_elems=float(acts), peak_activation_elems=float(max(i + o for i, o in pairs)),
                     input_bytes=4 * a.in_features, output_elems=a.out_features, kernels=2 * len(pairs))


class _Counter:
    """Walks a convolutional network, adding up parameters, MACs, traffic and kernels."""

    def __init__(self) -> None:
        self.params = self.buffers = self.kernels = 0
        self.macs = self.acts = self.peak = 0.0

    def op(self, in_elems: float, out_elems: float, macs: float = 0.0, params: int = 0) -> None:
        self.params += params
        self.macs += macs
        self.acts += in_elems + out_elems
        self.peak = max(self.peak, in_elems + out_elems)
        self.kernels += 1

    def conv_bn(self, c_in: int, c_out: int, k: int, stride: int, size: int) -> int:
        out = math.ceil(size / stride)
        self.op(c_in * size * size, c_out * out * out, c_out * out * out * c_in * k * k, c_out * c_in * k * k)
        self.op(c_out * out * out, c_out * out * out, params=2 * c_out)  # BatchNorm weight and bias
        self.buffers += 2 * c_out  # running mean and variance
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
    c.op(c_in, a.num_classes, c_in * a.num_classes, c_in * a.num_classes + a.num_classes)  # fc
    return ModelCost(parameters=c.params, buffers=c.buffers, flops=2 * c.macs, activation_elems=c.acts,
                     peak_activation_elems=c.peak, input_bytes=4 * 3 * a.image_size**2,
                     output_elems=a.num_classes, kernels=c.kernels)


def _transformer_cost(a: TransformerArch) -> ModelCost:
    d, ff, n, L = a.d_model, a.d_ff, a.n_layers, a.seq_len
    layer_params = (3 * d * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d) + 2 * 2 * d
    layer_flops = 2 * L * (4 * d * d + 2 * d * ff) + 4 * L * L * d  # projections, FFN, QK^T and AV
    layer_acts = L * (22 * d + 4 * ff)  # qkv, attention, out proj, add, LN, ff1, GELU, ff2, add, LN
    layer_peak = max(L * (d + ff), a.n_heads * L * L + 3 * L * d)  # FFN hidden, or unfused scores
    if a.causal:  # tied LM head on the last position only, after a final LayerNorm
        params = a.vocab_size * d + a.max_positions * d + n * layer_params + 2 * d
        head_flops, out, extra_kernels = 2 * d * a.vocab_size, a.vocab_size, 4  # emb, pos add, LN, head
    else:  # BERT: word + position + type embeddings, LayerNorm; pooler (tanh) and classifier
        params = (a.vocab_size + a.max_positions + a.type_vocab_size) * d + 2 * d + n * layer_params
        params += d * d + d + d * a.num_labels + a.num_labels
        head_flops, out, extra_kernels = 2 * d * d + 2 * d * a.num_labels, a.num_labels, 10
    return ModelCost(parameters=params, buffers=0, flops=float(n * layer_flops + head_flops),
                     activation_elems=float(n * layer_acts + 4 * L * d + out),
                     peak_activation_elems=float(layer_peak), input_bytes=TOKEN_ID_BYTES * L,
                     output_elems=out, kernels=10 * n + extra_kernels, float_input=False)
