"""The loop of every rank but 0: wait for rank 0's next message, run this rank's part of
the step, repeat until told to stop. Silence from rank 0 longer than the collective timeout
(plus two of the heartbeats it sends every few seconds when idle) means it is gone: exit
non-zero, so that the LeaderWorkerSet recreates the group."""

from __future__ import annotations

import logging

from r1_runtime.distributed import messages
from r1_runtime.distributed.messages import Kind
from r1_runtime.distributed.stage import StageRunner
from r1_runtime.engine.async_engine import IDLE_SECONDS

logger = logging.getLogger(__name__)


class StoppedError(RuntimeError):
    """Rank 0 stopped the replica before the warm-up was over."""


def run_worker(stage: StageRunner) -> int:
    """Serve rank 0's steps; the exit status: 0 when told to stop, 1 when rank 0 or another
    rank failed."""
    rank = stage.groups.place.rank
    try:
        _serve_until(stage, Kind.STOP)
    except RuntimeError as error:
        logger.error("rank %d: lost the replica (rank 0 or a peer failed): %s", rank, error)
        return 1
    logger.info("rank %d: stopping as rank 0 asked", rank)
    return 0


def serve_warm_up(stage: StageRunner) -> None:
    """A worker's part of the backend's warm-up: rank 0's warm-up steps, until it says they
    are over. Raises `StoppedError` when it stops instead."""
    _serve_until(stage, Kind.WARMED_UP)


def _serve_until(stage: StageRunner, last: Kind) -> None:
    groups = stage.groups
    # NOTE: an idle rank 0 speaks every IDLE_SECONDS; allow a collective's wait beyond that
    silence = groups.collective_timeout + 2 * IDLE_SECONDS
    while True:
        kind, payload = messages.receive(groups, timeout=silence)
        if kind is last:
            return
        if kind is Kind.STOP:
            raise StoppedError("rank 0 stopped the replica during the warm-up")
        if kind is Kind.HEARTBEAT:
            messages.barrier(groups)
        elif kind is Kind.STEP:
            stage.execute(messages.decode_step(payload))
