"""One step's model inputs as tensors: flattened ids and positions, KV slots, attention
metadata. Built on the host from Python lists, one tensor per field: a decode step is dozens
of sequences of one token, where each extra tensor op costs more than the list work."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from itertools import accumulate
from typing import Any

import torch

from r1_runtime.engine.batch import ScheduledBatch
from r1_runtime.models.kernels.attention import AttentionMetadata, FlashMetadata, PagedBatch


@dataclass(frozen=True)
class StepEntry:
    """One sequence's share of a step as the model needs it (`ScheduledSeq` without the
    sequence): what the step message carries to the other ranks of a replica."""

    token_ids: list[int]  # the new tokens, at positions start_position...
    start_position: int
    block_table: list[int]  # covers every position up to end_position
    is_prefill: bool
    is_sampled: bool

    @property
    def num_new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def end_position(self) -> int:
        return self.start_position + len(self.token_ids)


def step_entries(batch: ScheduledBatch) -> tuple[StepEntry, ...]:
    return tuple(
        StepEntry(
            entry.seq.token_ids[entry.start_position : entry.end_position],
            entry.start_position,
            entry.seq.block_table,
            entry.is_prefill,
            entry.is_sampled,
        )
        for entry in batch.seqs
    )


@dataclass(frozen=True)
class StepInputs:
    input_ids: torch.Tensor  # [num_tokens]
    positions: torch.Tensor  # [num_tokens]
    sample_indices: torch.Tensor  # [num_sampled]: the last token of each sampled entry
    meta: AttentionMetadata
    hidden: torch.Tensor | None = None  # after the first pipeline stage: the previous one's

    def to(self, device: torch.device) -> StepInputs:
        """The same inputs with every tensor on `device`."""
        if device.type == "cpu":
            return self
        moved: StepInputs = _move(self, device)
        return moved


def prepare_inputs(
    entries: tuple[StepEntry, ...], block_size: int, *, use_flash: bool
) -> StepInputs:
    """Flatten the step (decodes first, then prefill chunks) into host tensors."""
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    for entry in entries:
        span = range(entry.start_position, entry.end_position)
        table = entry.block_table
        input_ids += entry.token_ids
        positions += span
        slots += [table[p // block_size] * block_size + p % block_size for p in span]
    token_ends = list(accumulate(entry.num_new_tokens for entry in entries))
    sampled = [end - 1 for end, entry in zip(token_ends, entries, strict=True) if entry.is_sampled]
    slot_mapping = _long(slots)
    if use_flash:
        meta = AttentionMetadata(slot_mapping, flash=_flash_metadata(entries))
    else:
        num_decodes = sum(1 for entry in entries if not entry.is_prefill)
        meta = AttentionMetadata(
            slot_mapping,
            decodes=_paged_batch(entries[:num_decodes], block_size),
            prefills=_paged_batch(entries[num_decodes:], block_size),
        )
    return StepInputs(_long(input_ids), _long(positions), _long(sampled), meta)


def _paged_batch(entries: tuple[StepEntry, ...], block_size: int) -> PagedBatch | None:
    """The entries' new tokens padded to the longest; None for no entry."""
    if not entries:
        return None
    query_len = max(entry.num_new_tokens for entry in entries)
    max_blocks = -(-max(entry.end_position for entry in entries) // block_size)
    block_ids = [_padded(entry.block_table[:max_blocks], max_blocks) for entry in entries]
    # NOTE: a padding row takes its sequence's last position, so it sees real keys (no row is
    # all -inf) and its output, dropped afterwards, is finite.
    query_positions = torch.tensor(
        [[min(e.start_position + i, e.end_position - 1) for i in range(query_len)] for e in entries]
    )
    rows = [
        index * query_len + offset
        for index, entry in enumerate(entries)
        for offset in range(entry.num_new_tokens)
    ]
    return PagedBatch(
        num_tokens=len(rows),
        block_ids=torch.tensor(block_ids).flatten(),
        num_keys=max_blocks * block_size,
        query_positions=query_positions,
        query_rows=None if len(rows) == len(entries) * query_len else torch.tensor(rows),
    )


def _long(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def _padded(table: list[int], length: int) -> list[int]:
    """A block table padded with block 0 (masked out in attention)."""
    return table + [0] * (length - len(table))


def _flash_metadata(entries: tuple[StepEntry, ...]) -> FlashMetadata:
    max_blocks = max(len(entry.block_table) for entry in entries)
    return FlashMetadata(
        cu_seqlens_q=torch.tensor([0, *accumulate(e.num_new_tokens for e in entries)]).int(),
        cu_seqlens_k=torch.tensor([0, *accumulate(e.end_position for e in entries)]).int(),
        max_seqlen_q=max(entry.num_new_tokens for entry in entries),
        max_seqlen_k=max(entry.end_position for entry in entries),
        block_tables=torch.tensor([_padded(e.block_table, max_blocks) for e in entries]).int(),
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
