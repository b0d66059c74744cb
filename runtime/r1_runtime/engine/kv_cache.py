"""The KV cache tensor: sized once from a memory budget, allocated once, never grown."""

from __future__ import annotations

import math

import torch

from r1_runtime.models.base import PagedCausalLM

# On a host there is no --gpu-memory-utilization: the cache takes this share of the memory
# available once the weights are loaded (capped by what the sequences can use).
HOST_KV_CACHE_SHARE = 0.2


def bytes_per_block(model: PagedCausalLM, block_size: int, dtype: torch.dtype) -> int:
    """The cache bytes of `block_size` tokens, every layer."""
    return math.prod(model.kv_cache_shape(1, block_size)) * dtype.itemsize


def kv_cache_budget(device: torch.device, gpu_memory_utilization: float) -> int:
    """Bytes the cache may take, measured once the weights are loaded. On a GPU: what is left
    of `gpu_memory_utilization` of its memory for weights and cache together (the meaning of
    the flag in docs/runtime-flags.md, as vLLM's); on a host: `HOST_KV_CACHE_SHARE` of its
    available memory."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(total * gpu_memory_utilization) - (total - free)
    return int(host_available_memory() * HOST_KV_CACHE_SHARE)


def host_available_memory() -> int:
    """The host's MemAvailable, in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable not found in /proc/meminfo: pass --num-kv-blocks")


def allocate_kv_cache(
    model: PagedCausalLM,
    num_blocks: int,
    block_size: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """`model.kv_cache_shape(num_blocks, block_size)`, zeroed.

    NOTE: zeroed, not empty: padded decode attention reads slots past a sequence's end (masked
    out with weight 0), and 0 * NaN from uninitialised memory would poison the output.
    """
    return torch.zeros(model.kv_cache_shape(num_blocks, block_size), dtype=dtype, device=device)
