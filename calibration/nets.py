"""The built-in models in plain torch, built from the architectures in ``sim.models.archs``.

Sharing the architecture descriptions keeps the roofline's analytic counts honest: the tests
compare them with these modules' parameters and with ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from sim.models.archs import MlpArch, ResNetArch, TransformerArch


class FraudMLP(nn.Module):
    """Tabular fraud scoring: dense features -> ReLU hidden layers -> a probability."""

    def __init__(self, arch: MlpArch) -> None:
        super().__init__()
        dims = (arch.in_features, *arch.hidden)
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        head = [nn.Linear(dims[-1], arch.out_features)] + ([nn.Sigmoid()] if arch.sigmoid else [])
        self.body = nn.Sequential(*layers, *head)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 reduce, 3x3 (carrying the stride), 1x1 expand, residual add."""

    def __init__(self, c_in: int, width: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    """ResNet-50 (with the default ``ResNetArch``): image batch -> class logits."""

    def __init__(self, arch: ResNetArch) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, arch.width, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(arch.width), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        blocks, c_in = [], arch.width
        for stage, n_blocks in enumerate(arch.blocks):
            width = arch.width * 2**stage
            for i in range(n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(Bottleneck(c_in, width, width * arch.expansion, stride))
                c_in = width * arch.expansion
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, arch.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(images))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TransformerBlock(nn.Module):
    """Self-attention and a GELU feed-forward; post-norm (BERT) or pre-norm (GPT)."""

    def __init__(self, arch: TransformerArch) -> None:
        super().__init__()
        d = arch.d_model
        self.heads, self.causal, self.pre_norm = arch.n_heads, arch.causal, arch.causal
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, arch.d_ff), nn.Linear(arch.d_ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, length, d))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff2(F.gelu(self.ff1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attention(self.norm1(x))
            return x + self.feed_forward(self.norm2(x))
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.feed_forward(x))


class BertClassifier(nn.Module):
    """BERT-base encoder with its pooler and a sequence-classification head: token ids -> logits."""

    def __init__(self, arch: TransformerArch) -> None:
        super().__init__()
        d = arch.d_model
        self.words = nn.Embedding(arch.vocab_size, d)
        self.positions = nn.Embedding(arch.max_positions, d)
        self.token_types = nn.Embedding(arch.type_vocab_size, d)
        self.norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList(TransformerBlock(arch) for _ in range(arch.n_layers))
        self.pooler, self.classifier = nn.Linear(d, d), nn.Linear(d, arch.num_labels)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        x = self.words(token_ids) + self.positions(positions) + self.token_types.weight[0]
        x = self.norm(x)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


class TorchEncoderClassifier(nn.Module):
    """torch's own ``nn.TransformerEncoder`` (post-norm) over word embeddings, a classifier on the first
    token, no pooler: the encoder measured on an H100 (``bert-encoder``)."""

    def __init__(self, arch: TransformerArch) -> None:
        super().__init__()
        self.words = nn.Embedding(arch.vocab_size, arch.d_model)
        layer = nn.TransformerEncoderLayer(arch.d_model, arch.n_heads, arch.d_ff, activation=arch.activation,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, arch.n_layers, enable_nested_tensor=False)
        self.classifier = nn.Linear(arch.d_model, arch.num_labels)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(self.words(token_ids))[:, 0])


class Decoder(nn.Module):
    """Small GPT-style decoder: a prompt's token ids -> next-token logits (one prefill pass)."""

    def __init__(self, arch: TransformerArch) -> None:
        super().__init__()
        self.tokens = nn.Embedding(arch.vocab_size, arch.d_model)
        self.positions = nn.Embedding(arch.max_positions, arch.d_model)
        self.layers = nn.ModuleList(TransformerBlock(arch) for _ in range(arch.n_layers))
        self.norm = nn.LayerNorm(arch.d_model)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        x = self.tokens(token_ids) + self.positions(positions)
        for layer in self.layers:
            x = layer(x)
        return F.linear(self.norm(x[:, -1]), self.tokens.weight)  # head tied to the embedding


class Tiny(nn.Module):
    """A model small enough for calibration tests that finish in seconds."""

    def __init__(self, in_features: int = 16, hidden: int = 32, out_features: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class StallOnNewShape(Tiny):
    """:class:`Tiny` that sleeps ``stall_s`` the first time it sees each batch size.

    Stands in for the first-call costs of real stacks (kernel selection, allocator growth,
    compilation) so the tests can check that calibration records them.
    """

    def __init__(self, stall_s: float = 0.030) -> None:
        super().__init__()
        self.stall_s = stall_s
        self.seen: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] not in self.seen:
            self.seen.add(x.shape[0])
            time.sleep(self.stall_s)
        return super().forward(x)
