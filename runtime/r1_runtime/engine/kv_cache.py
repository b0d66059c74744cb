"""The KV cache tensor: sized once from a memory budget, allocated once, never grown."""

from __future__ import annotations

import torch

from r1_runtime.models.config import DecoderConfig


def bytes_per_block(config: DecoderConfig, block_size: int, dtype: torch.dtype) -> int:
    """Keys and values of `block_size` tokens in every layer."""
    elements = 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim
    return elements * dtype.itemsize


def available_memory(device: torch.device) -> int:
    """Bytes free for new allocations: the GPU's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable not found in /proc/meminfo: pass kv_cache_memory")


def num_kv_blocks(
    config: DecoderConfig,
    *,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device,
    kv_cache_memory: int | None,
    kv_cache_fraction: float,
    max_useful_blocks: int,
) -> int:
    """Blocks that fit in `kv_cache_memory` bytes, or else in `kv_cache_fraction` of the free
    memory, capped at `max_useful_blocks` when the budget comes from the fraction."""
    per_block = bytes_per_block(config, block_size, dtype)
    if kv_cache_memory is not None:
        num_blocks = kv_cache_memory // per_block
    else:
        budget = int(available_memory(device) * kv_cache_fraction)
        num_blocks = min(budget // per_block, max_useful_blocks)
    if num_blocks < 1:
        raise ValueError(
            f"the KV cache budget holds no block of {block_size} tokens ({per_block} bytes)"
        )
    return num_blocks


def allocate_kv_cache(
    config: DecoderConfig,
    num_blocks: int,
    block_size: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """`[num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]`, zeroed.

    NOTE: zeroed, not empty: padded decode attention reads slots past a sequence's end (masked
    out with weight 0), and 0 * NaN from uninitialised memory would poison the output.
    """
    shape = (config.num_layers, 2, num_blocks, block_size, config.num_kv_heads, config.head_dim)
    return torch.zeros(shape, dtype=dtype, device=device)
