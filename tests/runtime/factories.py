"""Factories and a step driver for scheduler tests: hand-fed sampled ids, no model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from r1_runtime.engine import (
    SamplingParams,
    ScheduledBatch,
    Scheduler,
    SchedulerConfig,
    Sequence,
    SequenceOutput,
)

EOS = 2
SAMPLED = 7  # a token that is neither EOS nor a stop id unless a test says so

SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_blocks": 64,
    "block_size": 4,
    "max_batch_tokens": 32,
    "max_num_seqs": 8,
    "max_waiting": 16,
    "eos_token_ids": frozenset({EOS}),
}

Sampler = Callable[[Sequence], int]


def make_config(**overrides: Any) -> SchedulerConfig:
    return SchedulerConfig(**{**SCHEDULER_DEFAULTS, **overrides})


def make_scheduler(**overrides: Any) -> Scheduler:
    return Scheduler(make_config(**overrides))


def make_prompt(index: int, length: int) -> list[int]:
    """Tokens no other index shares, so no prefix is cached by accident."""
    return [1000 * (index + 1) + position for position in range(length)]


def make_requests(
    n: int, *, prompt_len: int = 6, prefix: tuple[int, ...] = (), **params: Any
) -> list[Sequence]:
    """`n` requests `req-0`... whose prompts are `prefix` then `prompt_len` unique tokens."""
    sampling = SamplingParams(**{"max_tokens": 4, **params})
    return [
        Sequence(f"req-{i}", [*prefix, *make_prompt(i, prompt_len)], sampling) for i in range(n)
    ]


def add_all(scheduler: Scheduler, seqs: list[Sequence]) -> None:
    for seq in seqs:
        assert scheduler.try_add(seq)


def step(
    scheduler: Scheduler, sample: Sampler | int = SAMPLED
) -> tuple[ScheduledBatch | None, list[SequenceOutput]]:
    """One engine step with a fake model: `sample` gives each sampled sequence its token."""
    batch = scheduler.schedule()
    if batch is None:
        return None, []
    check_batch(scheduler, batch)
    pick: Sampler = sample if callable(sample) else (lambda _seq: sample)
    outputs = scheduler.postprocess(batch, [pick(entry.seq) for entry in batch.sampled])
    check_invariants(scheduler)
    return batch, outputs


def drain(
    scheduler: Scheduler, sample: Sampler | int = SAMPLED, max_steps: int = 1000
) -> list[ScheduledBatch]:
    """Step until every sequence has finished; fail if that takes more than `max_steps`."""
    batches: list[ScheduledBatch] = []
    for _ in range(max_steps):
        if scheduler.is_idle:
            return batches
        batch, _ = step(scheduler, sample)
        assert batch is not None, "unfinished sequences but nothing scheduled: a deadlock"
        batches.append(batch)
    raise AssertionError(f"not drained after {max_steps} steps")


def check_batch(scheduler: Scheduler, batch: ScheduledBatch) -> None:
    config = scheduler.config
    seqs = [entry.seq for entry in batch.seqs]
    assert batch.num_tokens <= config.max_batch_tokens
    assert len(set(map(id, seqs))) == len(seqs) <= config.max_num_seqs
    kinds = [entry.is_prefill for entry in batch.seqs]
    assert kinds == sorted(kinds), "decodes come before prefill chunks"
    for entry in batch.seqs:
        assert entry.num_new_tokens >= 1
        assert entry.start_position == entry.seq.num_computed_tokens
        assert entry.end_position <= len(entry.seq.block_table) * config.block_size
        assert entry.is_prefill or entry.num_new_tokens == 1


def check_invariants(scheduler: Scheduler) -> None:
    """Block accounting matches the sequences holding blocks; queues are consistent."""
    blocks = scheduler.block_manager
    assert len(scheduler.running) <= scheduler.config.max_num_seqs
    users = Counter(block_id for seq in scheduler.running for block_id in seq.block_table)
    for block_id in range(blocks.num_blocks):
        assert blocks.ref_count(block_id) == users[block_id] >= 0
    assert blocks.num_free_blocks == blocks.num_blocks - len(users)
    for seq in scheduler.running:
        assert len(set(seq.block_table)) == len(seq.block_table)
        assert seq.num_computed_tokens <= len(seq.block_table) * blocks.block_size
        assert len(seq.block_table) >= blocks.num_blocks_for(seq.num_tokens - 1)
        assert seq.num_uncomputed_tokens >= 1
    for seq in scheduler.waiting:
        assert seq.block_table == [] and seq.num_computed_tokens == 0
    arrivals = [seq.arrival_index for seq in scheduler.running]
    assert arrivals == sorted(arrivals)
