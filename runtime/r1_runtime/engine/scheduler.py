"""Continuous batching: which sequences run in the next step, and how many tokens each.

Plain Python, no torch and no I/O. The engine step is `schedule`, run the model, `postprocess`.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

from r1_runtime.engine.block_manager import BlockManager
from r1_runtime.engine.sequence import FinishReason, Sequence, SequenceStatus


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """Limits of one engine step and of the queue. Validated on construction."""

    num_blocks: int  # KV blocks, derived once from the KV cache memory budget
    block_size: int = 16  # token slots per block
    max_batch_tokens: int = 2048  # tokens computed per step, decode and prefill together
    max_num_seqs: int = 64  # sequences holding KV blocks at once
    max_waiting: int = 1024  # new requests queued; more are refused (the server answers 429)
    prefill_chunk_size: int | None = None  # prompt tokens per sequence per step; None: budget
    eos_token_ids: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        for name in ("num_blocks", "block_size", "max_batch_tokens", "max_num_seqs", "max_waiting"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.prefill_chunk_size is not None and self.prefill_chunk_size < 1:
            raise ValueError(f"prefill_chunk_size must be >= 1, got {self.prefill_chunk_size}")
        if self.max_batch_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_batch_tokens ({self.max_batch_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}): every running sequence decodes one token per step"
            )


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
    queue_seconds: float | None = None  # set by the engine on a request's first output


def _entry(seq: Sequence, num_new_tokens: int, *, is_prefill: bool) -> ScheduledSeq:
    start = seq.num_computed_tokens
    is_sampled = start + num_new_tokens == seq.num_tokens
    return ScheduledSeq(seq, start, num_new_tokens, is_prefill, is_sampled)


@dataclass
class DecodePlan:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)  # newest first, blocks freed
    too_long: list[Sequence] = field(default_factory=list)  # blocks freed


class DecodeManager:
    """Every running sequence in decode gets one token, oldest first. When the cache has no
    slot for a token, the newest running sequence is preempted (possibly this one)."""

    def __init__(self, block_manager: BlockManager) -> None:
        self.block_manager = block_manager

    def schedule(self, running: list[Sequence]) -> DecodePlan:
        """Removes preempted and too-long sequences from `running` (sorted oldest first)."""
        plan = DecodePlan()
        index = 0
        while index < len(running):
            seq = running[index]
            if seq.is_prefill:
                index += 1
            elif self._make_room(seq, running, plan):
                self.block_manager.append_slots(seq, 1)
                plan.scheduled.append(_entry(seq, 1, is_prefill=False))
                index += 1
        return plan

    def _make_room(self, seq: Sequence, running: list[Sequence], plan: DecodePlan) -> bool:
        # NOTE: victims are taken from the end of `running`, newer than `seq` and so not yet
        # scheduled this step. Once `seq` is alone, every other block is free, so the loop
        # ends: with room, with `seq` preempted, or with `seq` too long for the whole cache.
        blocks = self.block_manager
        while not blocks.can_append_slots(seq, 1):
            if blocks.num_blocks_for(seq.num_tokens) > blocks.num_blocks:
                running.remove(seq)
                blocks.free(seq)
                plan.too_long.append(seq)
                return False
            victim = running.pop()
            blocks.free(victim)
            plan.preempted.append(victim)
            if victim is seq:
                return False
        return True


@dataclass
class PrefillPlan:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)  # blocks allocated
    too_long: list[Sequence] = field(default_factory=list)


class PrefillManager:
    """Chunked prefill with the tokens decode left: first running sequences whose prefill is
    under way, then waiting ones in order while blocks and seats last (first come, first
    served: one that does not fit yet blocks those behind it)."""

    def __init__(self, block_manager: BlockManager, chunk_size: int | None) -> None:
        self.block_manager = block_manager
        self.chunk_size = chunk_size

    def schedule(
        self, running: list[Sequence], waiting: deque[Sequence], num_tokens: int, num_seats: int
    ) -> PrefillPlan:
        """Pops admitted and too-long sequences from the front of `waiting`."""
        plan = PrefillPlan()
        for seq in running:
            if num_tokens == 0:
                return plan
            if seq.is_prefill:
                num_tokens -= self._add_chunk(seq, num_tokens, plan)
        blocks = self.block_manager
        while waiting and num_tokens > 0 and len(plan.admitted) < num_seats:
            seq = waiting[0]
            if blocks.num_blocks_for(seq.num_tokens) > blocks.num_blocks:
                plan.too_long.append(waiting.popleft())
                continue
            if not blocks.can_allocate(seq):
                break
            blocks.allocate(waiting.popleft())
            plan.admitted.append(seq)
            num_tokens -= self._add_chunk(seq, num_tokens, plan)
        return plan

    def _add_chunk(self, seq: Sequence, num_tokens: int, plan: PrefillPlan) -> int:
        # NOTE: a running sequence's block table covers all its tokens from admission on, so a
        # prefill chunk never needs a block and never has to preempt anyone.
        num_new = min(seq.num_uncomputed_tokens, num_tokens, self.chunk_size or num_tokens)
        plan.scheduled.append(_entry(seq, num_new, is_prefill=True))
        return num_new


class Scheduler:
    """Decides every engine step. Not thread-safe: the engine loop owns it.

    `running` (oldest first) and `waiting` (front first) are for reading only.
    """

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.block_manager = BlockManager(config.num_blocks, config.block_size)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._decode = DecodeManager(self.block_manager)
        self._prefill = PrefillManager(self.block_manager, config.prefill_chunk_size)
        self._unfinished: dict[str, Sequence] = {}
        self._num_arrivals = 0

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def is_idle(self) -> bool:
        return not self._unfinished

    @property
    def num_prefix_cache_queries(self) -> int:
        return self.block_manager.num_prefix_cache_queries

    @property
    def num_prefix_cache_hits(self) -> int:
        return self.block_manager.num_prefix_cache_hits

    def try_add(self, seq: Sequence) -> bool:
        """Queue a new sequence. False, changing nothing, when the waiting queue is full."""
        if seq.seq_id in self._unfinished:
            raise ValueError(f"sequence {seq.seq_id!r} is already scheduled")
        if seq.status is not SequenceStatus.WAITING or seq.num_output_tokens:
            raise ValueError(f"sequence {seq.seq_id!r} is not new")
        if len(self.waiting) >= self.config.max_waiting:
            return False
        seq.arrival_index = self._num_arrivals
        self._num_arrivals += 1
        self.waiting.append(seq)
        self._unfinished[seq.seq_id] = seq
        return True

    def schedule(self) -> ScheduledBatch | None:
        """The next step within `max_batch_tokens` and `max_num_seqs`, or None when there is
        nothing to do. Blocks for every scheduled token are allocated."""
        decode = self._decode.schedule(self.running)
        for seq in decode.preempted:  # newest first, so the oldest ends at the front
            seq.status = SequenceStatus.WAITING
            self.waiting.appendleft(seq)
        self.num_preemptions += len(decode.preempted)
        num_tokens = self.config.max_batch_tokens - len(decode.scheduled)
        # NOTE: no admission in a step that had to preempt: the cache is short already.
        num_seats = 0 if decode.preempted else self.config.max_num_seqs - len(self.running)
        prefill = self._prefill.schedule(self.running, self.waiting, num_tokens, num_seats)
        for seq in prefill.admitted:
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=lambda s: s.arrival_index)
        finished = decode.too_long + prefill.too_long
        for seq in finished:
            self._finish(seq, FinishReason.TOO_LONG)
        if not decode.scheduled and not prefill.scheduled and not finished:
            return None
        return ScheduledBatch(tuple(decode.scheduled + prefill.scheduled), tuple(finished))

    def postprocess(
        self, batch: ScheduledBatch, sampled_token_ids: list[int]
    ) -> list[SequenceOutput]:
        """Record a step that ran: `sampled_token_ids` holds one id per `batch.sampled` entry.
        Appends them (the thinking budget may replace one with `think_end_token_id`), finishes
        sequences on a stop id, EOS (unless `ignore_eos`) or `max_tokens`, and frees finished
        sequences' blocks at once."""
        if len(sampled_token_ids) != len(batch.sampled):
            raise ValueError(
                f"{len(sampled_token_ids)} sampled ids for {len(batch.sampled)} sampled entries"
            )
        outputs = [SequenceOutput(seq.seq_id, [], seq.finish_reason) for seq in batch.finished]
        sampled = iter(sampled_token_ids)
        for entry in batch.seqs:
            token_id = next(sampled) if entry.is_sampled else None
            seq = entry.seq
            if seq.is_finished:  # aborted since `schedule`
                continue
            seq.num_computed_tokens = entry.end_position
            self.block_manager.cache_full_blocks(seq, entry.start_position)
            if token_id is not None:
                # NOTE: the thinking budget overrides the sampled id after sampling, once
                # (a preempted sequence keeps its outputs); the next step feeds the model the
                # forced id from `seq.token_ids`, so the sampler never needs to know.
                forced = seq.forced_token_id
                token_id = token_id if forced is None else forced
                seq.append_token(token_id)
                reason = self._stop_reason(seq, token_id)
                if reason is not None:
                    self._finish(seq, reason)
                outputs.append(SequenceOutput(seq.seq_id, [token_id], reason))
        self.running = [seq for seq in self.running if not seq.is_finished]
        return outputs

    def abort(self, seq_id: str) -> bool:
        """Finish a sequence in any state and free its blocks. False if it is unknown or
        already finished."""
        seq = self._unfinished.get(seq_id)
        if seq is None:
            return False
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self._finish(seq, FinishReason.ABORT)
        return True

    def _stop_reason(self, seq: Sequence, token_id: int) -> FinishReason | None:
        params = seq.params
        if token_id in params.stop_token_ids:
            return FinishReason.STOP
        if not params.ignore_eos and token_id in self.config.eos_token_ids:
            return FinishReason.STOP
        if seq.num_output_tokens >= params.max_tokens:
            return FinishReason.LENGTH
        return None

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        """The caller has taken `seq` out of `running` or `waiting`."""
        self.block_manager.free(seq)
        seq.finish(reason)
        del self._unfinished[seq.seq_id]
