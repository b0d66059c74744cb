"""Attention over the paged KV cache.

A layer's cache is `[2, num_blocks, block_size, num_kv_heads, head_dim]` (keys, then values).
Each step first writes the new keys and values at their slots, then attends:
- decodes (the first `num_decode_tokens` tokens, one per sequence) in one padded batch,
  each sequence reading its context through its block table, padding masked out;
- each prefill chunk on its own, with a causal mask offset by the prefix already cached.
On CUDA with flash-attn and a block size it accepts, one varlen call does all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:  # NOTE: an optional GPU dependency (the `gpu` extra); the SDPA path needs nothing more.
    from flash_attn import flash_attn_varlen_func  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the machine
    flash_attn_varlen_func = None

FLASH_BLOCK_SIZE_MULTIPLE = 256  # flash-attn's paged KV needs block_size % 256 == 0


def can_use_flash_attention(device: torch.device, dtype: torch.dtype, block_size: int) -> bool:
    """Whether the flash-attn varlen kernel can serve this cache."""
    return (
        flash_attn_varlen_func is not None
        and device.type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and block_size % FLASH_BLOCK_SIZE_MULTIPLE == 0
    )


@dataclass(frozen=True)
class PrefillChunk:
    """Tokens `[token_start, token_end)` of the step are positions `[context_len - (token_end -
    token_start), context_len)` of one sequence, whose blocks are `block_ids`."""

    token_start: int
    token_end: int
    context_len: int
    block_ids: torch.Tensor  # [blocks covering context_len]
    mask: torch.Tensor | None  # [num_tokens, context_len] bool; None: no cached prefix, causal


@dataclass(frozen=True)
class FlashMetadata:
    """All sequences of the step in one flash-attn varlen call over the paged cache."""

    cu_seqlens_q: torch.Tensor  # [num_seqs + 1] int32
    cu_seqlens_k: torch.Tensor  # [num_seqs + 1] int32: context lengths
    max_seqlen_q: int
    max_seqlen_k: int
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int32


@dataclass(frozen=True)
class AttentionMetadata:
    """Where one step's tokens go and what each attends to; shared by every layer."""

    slot_mapping: torch.Tensor  # [num_tokens] int64: cache slot of each new token
    num_decode_tokens: int
    decode_block_tables: torch.Tensor  # [num_decodes, max_blocks] int64, padded with block 0
    decode_mask: torch.Tensor  # [num_decodes, 1, 1, max_blocks * block_size] bool: key in context
    prefills: tuple[PrefillChunk, ...]
    flash: FlashMetadata | None = None


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer_cache: torch.Tensor,
    meta: AttentionMetadata,
) -> torch.Tensor:
    """`q` `[tokens, heads, head_dim]`, `k` and `v` `[tokens, kv_heads, head_dim]` -> the
    attention output `[tokens, heads, head_dim]`. Writes `k` and `v` into `layer_cache`."""
    key_cache, value_cache = layer_cache[0], layer_cache[1]
    _, _, num_kv_heads, head_dim = key_cache.shape
    key_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, meta.slot_mapping, k)
    value_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, meta.slot_mapping, v)
    if meta.flash is not None:
        return _flash(q, key_cache, value_cache, meta.flash)
    out = torch.empty_like(q)
    num_decodes = meta.num_decode_tokens
    if num_decodes:
        out[:num_decodes] = _decode(q[:num_decodes], key_cache, value_cache, meta)
    for chunk in meta.prefills:
        span = slice(chunk.token_start, chunk.token_end)
        out[span] = _prefill(q[span], k[span], v[span], key_cache, value_cache, chunk)
    return out


def _decode(
    q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, meta: AttentionMetadata
) -> torch.Tensor:
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads = key_cache.shape[2]
    # NOTE: query head h reads kv head h // group (transformers' repeat_kv). Viewing the group
    # of query heads as the query-length axis lets SDPA serve GQA without copying keys.
    q = q.view(num_seqs, num_kv_heads, num_heads // num_kv_heads, head_dim)
    keys = _gather(key_cache, meta.decode_block_tables)
    values = _gather(value_cache, meta.decode_block_tables)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=meta.decode_mask)
    return out.reshape(num_seqs, num_heads, head_dim)


def _gather(cache: torch.Tensor, block_tables: torch.Tensor) -> torch.Tensor:
    """`[seqs, kv_heads, max_blocks * block_size, head_dim]` from the sequences' blocks."""
    num_seqs = block_tables.shape[0]
    _, _, num_kv_heads, head_dim = cache.shape
    return cache[block_tables].view(num_seqs, -1, num_kv_heads, head_dim).transpose(1, 2)


def _prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    chunk: PrefillChunk,
) -> torch.Tensor:
    if chunk.mask is not None:  # a cached prefix: attend to it from the cache
        k = _gather(key_cache, chunk.block_ids[None])[0, :, : chunk.context_len]
        v = _gather(value_cache, chunk.block_ids[None])[0, :, : chunk.context_len]
    else:
        k, v = k.transpose(0, 1), v.transpose(0, 1)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1),
        k,
        v,
        attn_mask=chunk.mask,
        is_causal=chunk.mask is None,
        enable_gqa=True,
    )
    return out.transpose(0, 1)


def _flash(
    q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, flash: FlashMetadata
) -> torch.Tensor:  # pragma: no cover - needs CUDA and flash-attn
    assert flash_attn_varlen_func is not None
    out: torch.Tensor = flash_attn_varlen_func(
        q,
        key_cache,
        value_cache,
        cu_seqlens_q=flash.cu_seqlens_q,
        cu_seqlens_k=flash.cu_seqlens_k,
        max_seqlen_q=flash.max_seqlen_q,
        max_seqlen_k=flash.max_seqlen_k,
        causal=True,  # NOTE: flash-attn >= 2.1 aligns the causal mask to the end of the keys
        block_table=flash.block_tables,
    )
    return out
