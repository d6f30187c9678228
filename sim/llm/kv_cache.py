"""KV-cache block arithmetic (PagedAttention): the cache is a pool of equal blocks of ``block_size`` tokens.

A sequence holding ``t`` tokens of K and V occupies ``ceil(t / block_size)`` blocks; the last block may be
partly empty (internal fragmentation, at most ``block_size - 1`` tokens per sequence). The scheduler
(``sim.llm.scheduler``) keeps the pool as a count of free blocks; this module says how many there are and
how many a sequence needs.
"""

from __future__ import annotations


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks that hold ``tokens`` tokens of KV."""
    return -(-tokens // block_size)


def pool_blocks(kv_bytes_per_gpu: float, kv_bytes_per_token_per_gpu: int, block_size: int) -> int:
    """Whole blocks that fit in the memory left for the KV cache on each GPU of a replica (every GPU holds
    its share of every block: its KV heads under tensor parallelism, its layers under pipeline parallelism)."""
    if kv_bytes_per_gpu <= 0:
        return 0
    return int(kv_bytes_per_gpu // (block_size * kv_bytes_per_token_per_gpu))
