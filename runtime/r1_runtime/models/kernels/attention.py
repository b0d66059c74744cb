"""Attention over the paged KV cache.

A layer's cache is `[2, num_blocks, block_size, num_kv_heads, head_dim]` (keys, then values).
Each step first writes the new keys and values at their slots, then attends in at most two
SDPA calls: one for the decodes (the first tokens of the step, one per sequence), one for the
prefill chunks, each chunk's queries padded to the longest. Both read their keys from the
cache through the sequences' block tables, so a cached prefix needs nothing special.
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
class PagedBatch:
    """Some of the step's sequences, as a padded batch for SDPA: `num_seqs` sequences of up to
    `query_len` new tokens each (one for decodes), attending to keys read from their blocks."""

    num_tokens: int  # the step's tokens in this batch
    block_ids: torch.Tensor  # [num_seqs * max_blocks] int64: the block tables, flattened
    num_keys: int  # max_blocks * block_size: the keys each sequence's blocks hold
    # [num_seqs, query_len] int64: each query row's position; a row sees the keys up to it
    query_positions: torch.Tensor
    # [num_tokens] int64: the padded row (seq * query_len + offset) of each token, in step
    # order; None when no row is padding (decodes, or a lone chunk)
    query_rows: torch.Tensor | None

    @property
    def num_seqs(self) -> int:
        return self.query_positions.shape[0]

    @property
    def query_len(self) -> int:
        return self.query_positions.shape[1]

    def mask(self) -> torch.Tensor:
        """`[num_seqs, query_len, num_keys]` bool: key visible. Built by the SDPA path only (a
        step the C++ decoder runs needs none)."""
        keys = torch.arange(self.num_keys, device=self.query_positions.device)
        return keys <= self.query_positions.unsqueeze(2)


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
    """Where one step's tokens go and what each attends to; shared by every layer. Either
    `flash` or the SDPA batches (decodes first, then prefill chunks) are set."""

    slot_mapping: torch.Tensor  # [num_tokens] int64: cache slot of each new token
    decodes: PagedBatch | None = None
    prefills: PagedBatch | None = None
    flash: FlashMetadata | None = None


@dataclass(frozen=True)
class SdpaBatch:
    """A `PagedBatch` with its mask as SDPA's additive mask over grouped query rows."""

    batch: PagedBatch
    mask: torch.Tensor  # [num_seqs, 1, query_len * group, max_blocks * block_size]


@dataclass(frozen=True)
class LayerAttention:
    """What every layer's attention reads, derived once per step (`for_model`)."""

    slot_mapping: torch.Tensor
    batches: tuple[SdpaBatch, ...]  # in step order
    flash: FlashMetadata | None

    @classmethod
    def for_model(
        cls, meta: AttentionMetadata, num_queries_per_kv: int, dtype: torch.dtype
    ) -> LayerAttention:
        """Masks turned into SDPA's additive masks in the activations' dtype, rows repeated for
        the grouped query heads: once per step rather than in every layer."""
        batches = (batch for batch in (meta.decodes, meta.prefills) if batch is not None)
        sdpa = (SdpaBatch(b, _additive_mask(b.mask(), num_queries_per_kv, dtype)) for b in batches)
        return cls(meta.slot_mapping, tuple(sdpa), meta.flash)


def _additive_mask(mask: torch.Tensor, group: int, dtype: torch.dtype) -> torch.Tensor:
    """`[seqs, query_len, keys]` bool -> `[seqs, 1, query_len * group, keys]`: 0 where visible,
    -inf elsewhere, each query's row repeated for the query heads sharing a kv head."""
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    additive.masked_fill_(~mask, float("-inf"))
    return additive.repeat_interleave(group, dim=1).unsqueeze(1)


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer_cache: torch.Tensor,
    attention: LayerAttention,
) -> torch.Tensor:
    """`q` `[tokens, heads, head_dim]`, `k` and `v` `[tokens, kv_heads, head_dim]` -> the
    attention output `[tokens, heads, head_dim]`. Writes `k` and `v` into `layer_cache`."""
    key_cache, value_cache = layer_cache[0], layer_cache[1]
    _, _, num_kv_heads, head_dim = key_cache.shape
    key_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, attention.slot_mapping, k)
    value_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, attention.slot_mapping, v)
    if attention.flash is not None:
        return _flash(q, key_cache, value_cache, attention.flash)
    outputs = []
    start = 0
    for sdpa in attention.batches:
        end = start + sdpa.batch.num_tokens
        outputs.append(_attend(q[start:end], layer_cache, sdpa))
        start = end
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def latent_attention(
    q: torch.Tensor,
    latent: torch.Tensor,
    layer_cache: torch.Tensor,
    attention: LayerAttention,
    value_dim: int,
    scale: float,
) -> torch.Tensor:
    """Multi-head latent attention over a cache of one latent vector per token (DeepSeek's
    MLA in its absorbed form): `q` `[tokens, heads, latent_dim]`, `latent` `[tokens,
    latent_dim]` -> `[tokens, heads, value_dim]`, the weighted sum of the first `value_dim`
    values of each visible latent. Every head reads the same keys: one kv head, all query
    heads its group. Writes `latent` into `layer_cache` `[num_blocks, block_size,
    latent_dim]`."""
    latent_dim = layer_cache.shape[-1]
    layer_cache.view(-1, latent_dim).index_copy_(0, attention.slot_mapping, latent)
    outputs = []
    start = 0
    for sdpa in attention.batches:
        end = start + sdpa.batch.num_tokens
        outputs.append(_attend_latent(q[start:end], layer_cache, sdpa, value_dim, scale))
        start = end
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def _attend_latent(
    q: torch.Tensor, layer_cache: torch.Tensor, sdpa: SdpaBatch, value_dim: int, scale: float
) -> torch.Tensor:
    batch = sdpa.batch
    num_seqs, query_len = batch.num_seqs, batch.query_len
    _, num_heads, latent_dim = q.shape
    if batch.query_rows is not None:
        padded = q.new_zeros(num_seqs * query_len, num_heads, latent_dim)
        q = padded.index_copy_(0, batch.query_rows, q)
    q = q.view(num_seqs, 1, query_len * num_heads, latent_dim)
    keys = layer_cache.index_select(0, batch.block_ids).view(num_seqs, 1, -1, latent_dim)
    out = F.scaled_dot_product_attention(
        q, keys, keys[..., :value_dim], attn_mask=sdpa.mask, scale=scale
    )
    out = out.view(num_seqs * query_len, num_heads, value_dim)
    return out if batch.query_rows is None else out.index_select(0, batch.query_rows)


def _attend(q: torch.Tensor, layer_cache: torch.Tensor, sdpa: SdpaBatch) -> torch.Tensor:
    batch = sdpa.batch
    num_seqs, query_len = batch.num_seqs, batch.query_len
    _, num_heads, head_dim = q.shape
    num_kv_heads = layer_cache.shape[3]
    group = num_heads // num_kv_heads
    if batch.query_rows is not None:
        padded = q.new_zeros(num_seqs * query_len, num_heads, head_dim)
        q = padded.index_copy_(0, batch.query_rows, q)
    # NOTE: query head h reads kv head h // group (transformers' repeat_kv). Viewing each kv
    # head's group of query heads as query rows lets SDPA serve GQA without copying keys (its
    # enable_gqa is several times slower on CPU for decodes); for decodes this is a view.
    q = q.view(num_seqs, query_len, num_kv_heads, group, head_dim).transpose(1, 2)
    q = q.reshape(num_seqs, num_kv_heads, query_len * group, head_dim)
    pages = layer_cache.index_select(1, batch.block_ids)  # keys and values of every block
    pages = pages.view(2, num_seqs, -1, num_kv_heads, head_dim).transpose(2, 3)
    out = F.scaled_dot_product_attention(q, pages[0], pages[1], attn_mask=sdpa.mask)
    out = out.view(num_seqs, num_kv_heads, query_len, group, head_dim).transpose(1, 2)
    out = out.reshape(num_seqs * query_len, num_heads, head_dim)
    return out if batch.query_rows is None else out.index_select(0, batch.query_rows)


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
