"""Rank 0's model runner: the engine's scheduler, block manager and sampler stay here; each
step goes to the other ranks as one message, then rank 0 runs its own part (`StageRunner`)
and samples from the logits the last stage returns."""

from __future__ import annotations

import logging

import torch

from r1_runtime.distributed import messages
from r1_runtime.distributed.messages import Kind
from r1_runtime.distributed.stage import StageRunner, split_micro_batches
from r1_runtime.engine.batch import ScheduledBatch
from r1_runtime.engine.sampler import Sampler
from r1_runtime.engine.step_inputs import step_entries

logger = logging.getLogger(__name__)


class DriverRunner:
    """A `ModelRunner` over the whole replica. `micro_batches`: how many pieces a step is cut
    into so that pipeline stages overlap (the pipeline depth; 1 without pipeline stages)."""

    def __init__(self, stage: StageRunner, sampler: Sampler) -> None:
        self.stage = stage
        self.groups = stage.groups
        self.sampler = sampler
        self.micro_batches = stage.groups.layout.pipeline_parallel_size
        self.is_stopped = False

    def run(self, batch: ScheduledBatch) -> list[int]:
        if not batch.seqs:
            return []
        micro_batches = split_micro_batches(step_entries(batch), self.micro_batches)
        messages.send(self.groups, Kind.STEP, messages.encode_step(micro_batches))
        logits = self.stage.execute(micro_batches)
        if not batch.sampled:
            return []
        sampled = self.sampler(torch.cat(logits), [entry.seq for entry in batch.sampled])
        return list(sampled.tolist())

    def idle(self) -> None:
        """Between requests: every rank must answer a barrier, so a rank that died is found
        while no request runs (rank 0's error names it)."""
        messages.send(self.groups, Kind.HEARTBEAT)
        messages.barrier(self.groups)

    def stop(self) -> None:
        """Tell the other ranks to exit; they are gone (or unreachable) afterwards."""
        if self.is_stopped:
            return
        self.is_stopped = True
        try:
            messages.send(self.groups, Kind.STOP)
        except RuntimeError as error:
            logger.warning("could not tell every rank to stop: %s", error)
