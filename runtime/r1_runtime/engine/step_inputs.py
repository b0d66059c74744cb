"""One step's model inputs as tensors: flattened ids and positions, KV slots, attention
metadata. Built on the host with a loop over the step's sequences, never over its tokens."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from itertools import chain
from typing import Any

import torch

from r1_runtime.engine.scheduler import ScheduledBatch, ScheduledSeq
from r1_runtime.models.attention import AttentionMetadata, FlashMetadata, PrefillChunk


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
    ends = starts + num_new
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
    num_decodes = sum(1 for entry in entries if not entry.is_prefill)
    meta = AttentionMetadata(
        slot_mapping=slot_mapping,
        num_decode_tokens=num_decodes,
        **_decode_metadata(block_tables[:num_decodes], ends[:num_decodes], block_size),
        prefills=_prefill_chunks(entries, num_decodes, block_tables, token_ends, block_size),
        flash=_flash_metadata(num_new, ends, block_tables) if use_flash else None,
    )
    return StepInputs(input_ids, positions, token_ends[is_sampled] - 1, meta)


def _block_tables(entries: tuple[ScheduledSeq, ...]) -> torch.Tensor:
    """`[num_entries, max_blocks]` block ids, padded with block 0 (masked out in attention)."""
    max_blocks = max(len(entry.seq.block_table) for entry in entries)
    return torch.tensor(
        [table + [0] * (max_blocks - len(table)) for table in (e.seq.block_table for e in entries)]
    )


def _decode_metadata(
    block_tables: torch.Tensor, ends: torch.Tensor, block_size: int
) -> dict[str, torch.Tensor]:
    num_seqs = len(ends)
    max_blocks = -(-int(ends.max()) // block_size) if num_seqs else 0
    context = torch.arange(max_blocks * block_size)
    mask = context.unsqueeze(0) < ends.unsqueeze(1)
    return {
        "decode_block_tables": block_tables[:, :max_blocks],
        "decode_mask": mask.view(num_seqs, 1, 1, max_blocks * block_size),
    }


def _prefill_chunks(
    entries: tuple[ScheduledSeq, ...],
    num_decodes: int,
    block_tables: torch.Tensor,
    token_ends: torch.Tensor,
    block_size: int,
) -> tuple[PrefillChunk, ...]:
    chunks = []
    for index in range(num_decodes, len(entries)):
        entry = entries[index]
        token_end = int(token_ends[index])
        mask = None
        if entry.start_position > 0:  # keys: the cached prefix and this chunk, causally
            queries = torch.arange(entry.start_position, entry.end_position)
            mask = torch.arange(entry.end_position).unsqueeze(0) <= queries.unsqueeze(1)
        num_blocks = -(-entry.end_position // block_size)
        chunks.append(
            PrefillChunk(
                token_start=token_end - entry.num_new_tokens,
                token_end=token_end,
                context_len=entry.end_position,
                block_ids=block_tables[index, :num_blocks],
                mask=mask,
            )
        )
    return tuple(chunks)


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
