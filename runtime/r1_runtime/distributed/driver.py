"""Rank 0's model runner: the engine's scheduler, block manager and sampler stay here; each
step goes to the other ranks as one message, then rank 0 runs its own part (`StageRunner`)
and samples from the logits the last stage returns."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from r1_runtime.distributed import messages
from r1_runtime.distributed.messages import Kind
from r1_runtime.distributed.stage import StageRunner, split_micro_batches
from r1_runtime.engine.backends.base import WarmUp
from r1_runtime.engine.batch import ScheduledBatch
from r1_runtime.engine.sampler import Sampler
from r1_runtime.engine.step_inputs import step_entries

logger = logging.getLogger(__name__)


class DriverRunner:
    """A `ModelRunner` over the whole replica. `micro_batches`: how many pieces a step is cut
    into so that pipeline stages overlap (the pipeline depth; 1 without pipeline stages)."""

    def __init__(self, stage: StageRunner) -> None:
        self.stage = stage
        self.groups = stage.groups
        self.sampler = Sampler()
        self.micro_batches = stage.groups.layout.pipeline_parallel_size

    def prepare(self, entry: Path | None, warm_up: WarmUp) -> None:
        """Prepare every rank's backend together: `warm_up` drives the engine's warm-up steps
        through the replica, then the other ranks hear that it is over (`serve_warm_up`)."""

        def warm_up_replica() -> None:
            warm_up()
            messages.send(self.groups, Kind.WARMED_UP)

        self.stage.prepare(entry, warm_up_replica)
        assert self.stage.kernels is not None
        self.sampler = Sampler(self.stage.kernels.argmax)

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
