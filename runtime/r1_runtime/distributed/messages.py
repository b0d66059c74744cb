"""What rank 0 tells the other ranks: one compact message per step, over the control group.

A message is a header `[kind, length]` and, for a step, one int32 tensor of `length` values:
the micro-batches, each its entries' positions, flags, new token ids and block tables
(`StepEntry`): what every rank needs to build the same model inputs, nothing else (sampling
happens on rank 0 alone). Every wait is bounded by the collective timeout.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

from r1_runtime.distributed.group import ProcessGroups
from r1_runtime.engine.step_inputs import StepEntry

MicroBatches = list[tuple[StepEntry, ...]]
MESSAGE_TAG = 1
MESSAGE_DTYPE = torch.int32  # token and block ids, positions, counts: all below 2**31


class Kind(enum.IntEnum):
    STEP = 1
    HEARTBEAT = 2  # the leader is idle: answer the barrier that follows
    STOP = 3  # the replica is shutting down: exit 0
    WARMED_UP = 4  # the backend's warm-up steps are over: the engine is prepared


def encode_step(micro_batches: MicroBatches) -> torch.Tensor:
    values = [len(micro_batches)]
    for entries in micro_batches:
        values.append(len(entries))
        for entry in entries:
            flags = int(entry.is_prefill) | int(entry.is_sampled) << 1
            values += [entry.start_position, entry.num_new_tokens, flags, len(entry.block_table)]
            values += entry.token_ids
            values += entry.block_table
    return torch.tensor(values, dtype=MESSAGE_DTYPE)


def decode_step(payload: torch.Tensor) -> MicroBatches:
    values: Iterator[int] = iter(payload.tolist())

    def take(count: int) -> list[int]:
        return [next(values) for _ in range(count)]

    micro_batches = []
    for _ in range(next(values)):
        entries = []
        for _ in range(next(values)):
            start, num_tokens, flags, num_blocks = take(4)
            tokens = take(num_tokens)
            entries.append(
                StepEntry(tokens, start, take(num_blocks), bool(flags & 1), bool(flags & 2))
            )
        micro_batches.append(tuple(entries))
    return micro_batches


def send(groups: ProcessGroups, kind: Kind, payload: torch.Tensor | None = None) -> None:
    """From rank 0 to every other rank; returns once each has it (or raises past the
    collective timeout)."""
    body = payload if payload is not None else torch.empty(0, dtype=MESSAGE_DTYPE)
    header = torch.tensor([kind, body.numel()], dtype=MESSAGE_DTYPE)
    works = []
    for rank in range(1, groups.layout.world_size):
        works.append(dist.isend(header, rank, group=groups.control, tag=MESSAGE_TAG))
        if body.numel():
            works.append(dist.isend(body, rank, group=groups.control, tag=MESSAGE_TAG))
    for work in works:
        wait(work, groups.collective_timeout)


def receive(groups: ProcessGroups, timeout: float) -> tuple[Kind, torch.Tensor]:
    """The next message from rank 0, waiting at most `timeout` seconds for it."""
    header = torch.empty(2, dtype=MESSAGE_DTYPE)
    wait(dist.irecv(header, 0, group=groups.control, tag=MESSAGE_TAG), timeout)
    kind, length = Kind(int(header[0])), int(header[1])
    body = torch.empty(length, dtype=MESSAGE_DTYPE)
    if length:
        wait(dist.irecv(body, 0, group=groups.control, tag=MESSAGE_TAG), groups.collective_timeout)
    return kind, body


def wait(work: dist.Work | None, timeout: float) -> None:
    """Wait for a point-to-point operation, at most `timeout` seconds (then raise)."""
    assert work is not None, "every rank is in the groups it talks over"
    work.wait(timedelta(seconds=timeout))


def barrier(groups: ProcessGroups) -> None:
    """Every rank answers within the collective timeout; rank 0's error names those that do
    not (gloo's monitored barrier)."""
    dist.monitored_barrier(
        groups.control, timeout=timedelta(seconds=groups.collective_timeout), wait_all_ranks=True
    )
