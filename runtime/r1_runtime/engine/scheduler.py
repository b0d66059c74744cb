"""Continuous batching: which sequences run in the next step, and how many tokens each.

Plain Python, no torch and no I/O. The engine step is `schedule`, run the model, `postprocess`.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from r1_runtime.engine.batch import ScheduledBatch, SequenceOutput
from r1_runtime.engine.block_manager import BlockManager
from r1_runtime.engine.sequence import FinishReason, Sequence, SequenceStatus
from r1_runtime.engine.step_managers import DecodeManager, PrefillManager


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


class Scheduler:
    """Decides every engine step. Not thread-safe: the engine loop owns it.

    `running` (oldest first) and `waiting` (front first) are for reading only.
    """

    def __init__(
        self, config: SchedulerConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._clock = clock  # stamps when a sequence is first scheduled
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
        finished = decode.too_long + prefill.too_long
        if prefill.admitted or prefill.too_long:
            now = self._clock()
            for seq in prefill.admitted + prefill.too_long:
                seq.mark_scheduled(now)
        for seq in prefill.admitted:
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=lambda s: s.arrival_index)
        for seq in finished:
            self._finish(seq, FinishReason.TOO_LONG)
        if not decode.scheduled and not prefill.scheduled and not finished:
            return None
        return ScheduledBatch(tuple(decode.scheduled + prefill.scheduled), tuple(finished))

    def postprocess(
        self, batch: ScheduledBatch, sampled_token_ids: list[int]
    ) -> list[SequenceOutput]:
        """Record a step that ran: `sampled_token_ids` holds one id per `batch.sampled` entry.
        Appends them (`Sequence.append_sampled`: the thinking budget may force one), finishes
        sequences on a stop id, EOS (unless `ignore_eos`) or `max_tokens`, and frees finished
        sequences' blocks at once. A request's first output carries its `queue_seconds`."""
        if len(sampled_token_ids) != len(batch.sampled):
            raise ValueError(
                f"{len(sampled_token_ids)} sampled ids for {len(batch.sampled)} sampled entries"
            )
        outputs = [
            SequenceOutput(seq.seq_id, [], seq.finish_reason, seq.queue_seconds)
            for seq in batch.finished
        ]
        sampled = iter(sampled_token_ids)
        for entry in batch.seqs:
            token_id = next(sampled) if entry.is_sampled else None
            seq = entry.seq
            if seq.is_finished:  # aborted since `schedule`
                continue
            seq.num_computed_tokens = entry.end_position
            self.block_manager.cache_full_blocks(seq, entry.start_position)
            if token_id is not None:
                token_id = seq.append_sampled(token_id)
                reason = self._stop_reason(seq, token_id)
                if reason is not None:
                    self._finish(seq, reason)
                queue_seconds = seq.queue_seconds if seq.num_output_tokens == 1 else None
                outputs.append(SequenceOutput(seq.seq_id, [token_id], reason, queue_seconds))
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
