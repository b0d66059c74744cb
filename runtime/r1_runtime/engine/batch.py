"""One engine step as the scheduler decided it, and what it changed per sequence."""

from __future__ import annotations

from dataclasses import dataclass

from r1_runtime.engine.sequence import FinishReason, Sequence


@dataclass(frozen=True)
class ScheduledSeq:
    """One sequence's share of a step: tokens [start_position, start_position + num_new_tokens)
    of `seq.token_ids`, at those positions. Token at position p goes to KV slot
    `seq.block_table[p // block_size] * block_size + p % block_size`; the block table already
    covers every scheduled position, and attention for it sees positions 0..p."""

    seq: Sequence
    start_position: int
    num_new_tokens: int
    is_prefill: bool  # a prefill chunk (maybe one token, after a cache hit); else one decode
    is_sampled: bool  # the chunk reaches the last token: sample from its last position

    @property
    def end_position(self) -> int:
        return self.start_position + self.num_new_tokens


@dataclass(frozen=True)
class ScheduledBatch:
    """One step: decodes first, then prefill chunks; each sequence at most once. `finished`
    holds sequences the scheduler had to end while scheduling (`FinishReason.TOO_LONG`);
    `postprocess` reports them. `num_tokens` can be 0 when that is all the step does."""

    seqs: tuple[ScheduledSeq, ...]
    finished: tuple[Sequence, ...] = ()

    @property
    def num_tokens(self) -> int:
        return sum(entry.num_new_tokens for entry in self.seqs)

    @property
    def sampled(self) -> tuple[ScheduledSeq, ...]:
        """Entries that get a token: `postprocess` takes one sampled id per entry, in order."""
        return tuple(entry for entry in self.seqs if entry.is_sampled)


@dataclass(frozen=True)
class SequenceOutput:
    """What one step changed for one sequence, for the engine to stream."""

    seq_id: str
    new_token_ids: list[int]
    finish_reason: FinishReason | None
    queue_seconds: float | None = None  # on a request's first output: its time in the queue
