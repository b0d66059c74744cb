"""The loop of every rank but 0: wait for rank 0's next message, run this rank's part of
the step, repeat until told to stop. Silence from rank 0 longer than the collective timeout
(it sends a heartbeat every few seconds when idle) means it is gone: exit non-zero, so that
the LeaderWorkerSet recreates the group."""

from __future__ import annotations

import logging

from r1_runtime.distributed import messages
from r1_runtime.distributed.messages import Kind
from r1_runtime.distributed.stage import StageRunner

logger = logging.getLogger(__name__)


def run_worker(stage: StageRunner) -> int:
    """Serve rank 0's steps; the exit status: 0 when told to stop, 1 when rank 0 or another
    rank failed."""
    groups = stage.groups
    rank = groups.place.rank
    try:
        while True:
            kind, payload = messages.receive(groups, timeout=groups.collective_timeout)
            if kind is Kind.STOP:
                logger.info("rank %d: stopping as rank 0 asked", rank)
                return 0
            if kind is Kind.HEARTBEAT:
                messages.barrier(groups)
            else:
                stage.execute(messages.decode_step(payload))
    except RuntimeError as error:
        logger.error("rank %d: lost the replica (rank 0 or a peer failed): %s", rank, error)
        return 1
