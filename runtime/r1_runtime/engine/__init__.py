"""The inference engine's pure-Python core: request state, KV block bookkeeping, scheduler."""

from r1_runtime.engine.batch import ScheduledBatch, ScheduledSeq, SequenceOutput
from r1_runtime.engine.block_manager import BlockManager
from r1_runtime.engine.scheduler import Scheduler, SchedulerConfig
from r1_runtime.engine.sequence import FinishReason, SamplingParams, Sequence, SequenceStatus

__all__ = [
    "BlockManager",
    "FinishReason",
    "SamplingParams",
    "ScheduledBatch",
    "ScheduledSeq",
    "Scheduler",
    "SchedulerConfig",
    "Sequence",
    "SequenceOutput",
    "SequenceStatus",
]
