"""The scheduler's two managers, each answering "what runs within this budget": every running
decode (preempting when blocks run out), then prefill chunks with the tokens left. Plain Python.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from r1_runtime.engine.batch import ScheduledSeq
from r1_runtime.engine.block_manager import BlockManager
from r1_runtime.engine.sequence import Sequence


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
