"""One step's model inputs as tensors: flattened ids and positions, KV slots, attention
metadata. Built on the host with a loop over the step's sequences, never over its tokens."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from itertools import chain
from typing import Any

import torch

from r1_runtime.engine.scheduler import ScheduledBatch, ScheduledSeq
from r1_runtime.models.attention import AttentionMetadata, FlashMetadata, PagedBatch


@dataclass(frozen=True)
class StepInputs:
    input_ids: torch.Tensor  # [num_tokens]
    positions: torch.Tensor  # [num_tokens]
    sample_indices: torch.Tensor  # [num_sampled]: the last token of each sampled entry
    meta: AttentionMetadata

    def to(self, device: torch.device) -> StepInputs:
        """The same inputs with every tensor on `device`."""
        if device.type == "cpu":
            return self
        moved: StepInputs = _move(self, device)
        return moved


def prepare_inputs(batch: ScheduledBatch, block_size: int, *, use_flash: bool) -> StepInputs:
    """Flatten the step (decodes first, then prefill chunks) into host tensors."""
    entries = batch.seqs
    num_new = torch.tensor([entry.num_new_tokens for entry in entries])
    starts = torch.tensor([entry.start_position for entry in entries])
    token_ends = num_new.cumsum(0)
    owner = torch.repeat_interleave(torch.arange(len(entries)), num_new)  # entry of each token
    positions = torch.arange(int(token_ends[-1])) - (token_ends - num_new - starts)[owner]
    block_tables = _block_tables(entries)
    slot_mapping = (
        block_tables[owner, positions // block_size] * block_size + positions % block_size
    )
    input_ids = torch.tensor(
        list(
            chain.from_iterable(e.seq.token_ids[e.start_position : e.end_position] for e in entries)
        )
    )
    is_sampled = torch.tensor([entry.is_sampled for entry in entries])
    if use_flash:
        meta = AttentionMetadata(
            slot_mapping, flash=_flash_metadata(num_new, starts + num_new, block_tables)
        )
    else:
        num_decodes = sum(1 for entry in entries if not entry.is_prefill)
        batches = [
            _paged_batch(starts[part], num_new[part], block_tables[part], block_size)
            for part in (slice(num_decodes), slice(num_decodes, None))
        ]
        meta = AttentionMetadata(slot_mapping, decodes=batches[0], prefills=batches[1])
    return StepInputs(input_ids, positions, token_ends[is_sampled] - 1, meta)


def _block_tables(entries: tuple[ScheduledSeq, ...]) -> torch.Tensor:
    """`[num_entries, max_blocks]` block ids, padded with block 0 (masked out in attention)."""
    max_blocks = max(len(entry.seq.block_table) for entry in entries)
    return torch.tensor(
        [table + [0] * (max_blocks - len(table)) for table in (e.seq.block_table for e in entries)]
    )


def _paged_batch(
    starts: torch.Tensor, num_new: torch.Tensor, block_tables: torch.Tensor, block_size: int
) -> PagedBatch | None:
    """Sequences whose new tokens are positions `[start, start + num_new)`, padded to the
    longest; None for no sequence."""
    if not len(starts):
        return None
    ends = starts + num_new
    query_len = int(num_new.max())
    max_blocks = -(-int(ends.max()) // block_size)
    offsets = torch.arange(query_len)
    # NOTE: a padding row takes its sequence's last position, so it sees real keys (no row is
    # all -inf) and its output, dropped afterwards, is finite.
    query_positions = torch.minimum(starts.unsqueeze(1) + offsets, ends.unsqueeze(1) - 1)
    keys = torch.arange(max_blocks * block_size)
    is_token = offsets < num_new.unsqueeze(1)
    return PagedBatch(
        num_tokens=int(num_new.sum()),
        block_ids=block_tables[:, :max_blocks].flatten(),
        mask=keys <= query_positions.unsqueeze(2),
        query_rows=None if bool(is_token.all()) else is_token.flatten().nonzero().squeeze(1),
    )


def _flash_metadata(
    num_new: torch.Tensor, ends: torch.Tensor, block_tables: torch.Tensor
) -> FlashMetadata:
    zero = torch.zeros(1, dtype=torch.int32)
    return FlashMetadata(
        cu_seqlens_q=torch.cat([zero, num_new.cumsum(0).int()]),
        cu_seqlens_k=torch.cat([zero, ends.cumsum(0).int()]),
        max_seqlen_q=int(num_new.max()),
        max_seqlen_k=int(ends.max()),
        block_tables=block_tables.int(),
    )


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, tuple):
        return tuple(_move(item, device) for item in value)
    if hasattr(value, "__dataclass_fields__"):
        changes = {f.name: _move(getattr(value, f.name), device) for f in fields(value)}
        return replace(value, **changes)
    return value
