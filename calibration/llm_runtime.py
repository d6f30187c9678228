"""The built-in decoder run iteration by iteration over a paged KV cache: what an LLM server executes.

One *iteration* (``DecoderRuntime.step``) computes a list of :class:`SeqWork`: a prompt chunk (its tokens
from position ``start``) or a decode (one token, the last one emitted, at position ``start``). Every
token of every piece goes through the linear layers together, as one ``[tokens, hidden]`` matrix; its
K and V are written into the cache; attention then runs per sequence over the sequence's whole
context read back from the cache (a prompt chunk causally, offset by what was computed before it);
the last token of each piece that samples goes through the final norm and the (tied) LM head, and the
next token is the greedy argmax.

The KV cache is **paged** (PagedAttention's layout, without its fused kernel): per layer one K and
one V tensor of ``blocks × block_size`` token slots; a sequence owns a list of blocks (its block
table), grown and released by the caller as ``sim.llm.scheduler.Scheduler`` counts them, so the real
server and the simulator hold the same number of blocks at every moment. Reading a context gathers
its slots (``index_select``), so attention costs grow with the KV tokens read, as the iteration-time
model assumes. No CUDA graphs, no fused kernels: one torch op after another on the host.

**Padded matmuls.** MKL's single-thread sgemm changes kernel at 16 rows: 15 rows through the decoder's
32000 × 512 LM head take 1.7× as long as 16 (a qkv projection 1.6×). Every matmul of 9–15 rows is
therefore run on 16 (zero rows added, their results dropped), as vLLM pads a decode batch to the next
CUDA-graph size. Below 9 rows the time still steps with the row count (MKL's small-matrix kernels), so
:meth:`DecoderRuntime.operator_times` measures the token-wise work per row count, for the iteration-time
model to read rather than guess.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from calibration.nets import Decoder


@dataclass(frozen=True)
class SeqWork:
    """One sequence's part of an iteration: ``tokens`` at positions ``start``.. (their KV is written
    there); ``sample``: the next token is computed from the last of them."""

    seq: int
    tokens: list[int]
    start: int
    sample: bool


class PagedKvCache:
    """K and V of every layer in ``blocks`` blocks of ``block_size`` token slots, and each sequence's
    block table. Block ids are handed out lowest first and returned on release."""

    def __init__(self, layers: int, blocks: int, block_size: int, heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32) -> None:
        shape = (layers, blocks * block_size, heads, head_dim)
        self.k, self.v = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
        self.blocks, self.block_size = blocks, block_size
        self._free = list(range(blocks - 1, -1, -1))
        self.tables: dict[int, list[int]] = {}

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    def resize(self, seq: int, blocks: int) -> None:
        """Give ``seq`` exactly ``blocks`` blocks (0 releases them all; shrinking otherwise is not done)."""
        table = self.tables.setdefault(seq, [])
        if blocks == 0:
            self.release(seq)
            return
        if blocks < len(table):
            raise ValueError(f"sequence {seq}: {len(table)} blocks cannot shrink to {blocks}")
        if blocks - len(table) > len(self._free):
            raise RuntimeError(f"sequence {seq} needs {blocks - len(table)} more KV blocks; {len(self._free)} free")
        table.extend(self._free.pop() for _ in range(blocks - len(table)))

    def release(self, seq: int) -> None:
        self._free.extend(reversed(self.tables.pop(seq, [])))

    def slots(self, seq: int, start: int, stop: int) -> torch.Tensor:
        """Cache slot of each position ``start..stop-1`` of ``seq`` (its block table must cover them)."""
        table, size = self.tables[seq], self.block_size
        if stop > len(table) * size:
            raise RuntimeError(f"sequence {seq}: position {stop - 1} is beyond its {len(table)} KV blocks of {size}")
        positions = torch.arange(start, stop)
        return torch.tensor(table, dtype=torch.long)[positions // size] * size + positions % size


PAD_FROM, PAD_TO = 9, 16


def operator_rows(max_tokens: int) -> list[int]:
    """Token counts :meth:`DecoderRuntime.operator_times` measures: every count to 32 (where the kernels step),
    then a ladder to ``max_tokens``."""
    ladder = [40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 1024]
    rows = list(range(1, 33)) + [r for r in ladder if r < max_tokens]
    return rows + ([max_tokens] if max_tokens > rows[-1] else [])


def padded(matmul, x: torch.Tensor) -> torch.Tensor:
    """``matmul(x)``, run on 16 rows when ``x`` has 9..15 (module docstring)."""
    rows = x.shape[0]
    if not PAD_FROM <= rows < PAD_TO:
        return matmul(x)
    return matmul(torch.cat([x, x.new_zeros(PAD_TO - rows, *x.shape[1:])]))[:rows]


class DecoderRuntime:
    """A :class:`calibration.nets.Decoder`'s weights run one iteration at a time over a :class:`PagedKvCache`."""

    def __init__(self, model: Decoder, cache: PagedKvCache) -> None:
        self.model, self.cache = model.eval(), cache
        first = model.layers[0]
        self.heads = first.heads
        self.hidden = model.norm.normalized_shape[0]
        self.max_positions = model.positions.num_embeddings

    @torch.inference_mode()
    def step(self, work: list[SeqWork]) -> list[int]:
        """Run one iteration; the next token of each piece that samples, in the order given."""
        model, cache = self.model, self.cache
        lengths = [len(w.tokens) for w in work]
        tokens = torch.tensor([t for w in work for t in w.tokens], dtype=torch.long)
        positions = torch.cat([torch.arange(w.start, w.start + n) for w, n in zip(work, lengths)])
        if int(positions.max()) >= self.max_positions:
            raise RuntimeError(f"position {int(positions.max())} is beyond the model's {self.max_positions}")
        written = torch.cat([cache.slots(w.seq, w.start, w.start + n) for w, n in zip(work, lengths)])
        contexts = [cache.slots(w.seq, 0, w.start + n) for w, n in zip(work, lengths)]
        x = model.tokens(tokens) + model.positions(positions)
        heads, hidden = self.heads, self.hidden
        for index, layer in enumerate(model.layers):
            q, k, v = padded(layer.qkv, layer.norm1(x)).view(-1, 3, heads, hidden // heads).unbind(1)
            cache.k[index].index_copy_(0, written, k)
            cache.v[index].index_copy_(0, written, v)
            x = x + padded(layer.proj, self._attention(index, q, work, lengths, contexts))
            x = x + padded(layer.ff2, F.gelu(padded(layer.ff1, layer.norm2(x))))
        ends = torch.tensor(lengths).cumsum(0) - 1
        rows = ends[[i for i, w in enumerate(work) if w.sample]]
        if rows.numel() == 0:
            return []
        return self._sample(x[rows])

    @torch.inference_mode()
    def operator_times(self, rows: list[int], samples: int = 3) -> dict:
        """Median times of an iteration's token-wise work for each token count in ``rows``: ``body_s``, every
        layer's norms, QKV and output projections, MLP and residual adds on that many tokens (padded as
        :meth:`step` pads; no attention, no KV writes); ``head_s``, the final norm, LM head and argmax on
        that many sampled rows. One untimed run of each count first."""
        g = torch.Generator().manual_seed(0)
        body, head = [], []
        for m in rows:
            x = torch.randn(m, self.hidden, generator=g)
            times = []
            for _ in range(samples + 1):
                t0 = time.perf_counter()
                self._token_work(x)
                t1 = time.perf_counter()
                self._sample(x)
                times.append((t1 - t0, time.perf_counter() - t1))
            b, h = np.median(np.array(times[1:]), axis=0)
            body.append(float(b))
            head.append(float(h))
        return {"rows": list(rows), "body_s": body, "head_s": head, "samples": samples}

    def _token_work(self, x: torch.Tensor) -> torch.Tensor:
        """What :meth:`step` does to every token of a layer, without attention (its output stands in)."""
        hidden = self.hidden
        for layer in self.model.layers:
            qkv = padded(layer.qkv, layer.norm1(x))
            x = x + padded(layer.proj, qkv[:, :hidden])
            x = x + padded(layer.ff2, F.gelu(padded(layer.ff1, layer.norm2(x))))
        return x

    def _sample(self, h: torch.Tensor) -> list[int]:
        model = self.model
        return padded(lambda r: F.linear(r, model.tokens.weight), model.norm(h)).argmax(-1).tolist()

    def _attention(self, layer: int, q: torch.Tensor, work: list[SeqWork], lengths: list[int],
                   contexts: list[torch.Tensor]) -> torch.Tensor:
        """Each piece's queries against its sequence's whole cached context, concatenated back ``[tokens, hidden]``."""
        keys, values = self.cache.k[layer], self.cache.v[layer]
        out, row = [], 0
        for w, n, ctx in zip(work, lengths, contexts):
            qi = q[row:row + n].transpose(0, 1)  # [heads, n, head_dim]
            ki = keys.index_select(0, ctx).transpose(0, 1)  # [heads, context, head_dim]
            vi = values.index_select(0, ctx).transpose(0, 1)
            if n == 1:  # a decode (or a one-token chunk) sees its whole context
                o = F.scaled_dot_product_attention(qi, ki, vi)
            elif w.start == 0:  # a chunk from the start of the prompt: plain causal
                o = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True)
            else:  # a later chunk: query j (position start + j) sees positions <= start + j
                allowed = torch.arange(w.start + n)[None, :] <= (w.start + torch.arange(n))[:, None]
                o = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=allowed)
            out.append(o.transpose(0, 1).reshape(n, self.hidden))
            row += n
        return torch.cat(out)
