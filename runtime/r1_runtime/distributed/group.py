"""Joining a replica's torch.distributed group, with every wait bounded.

Rank 0 hosts the rendezvous store at MASTER_ADDR:MASTER_PORT; the other ranks retry reaching
it until the rendezvous timeout (their pods may start minutes apart). Each rank then checks
in, and rank 0 waits for all of them: past the timeout it names the ranks that never joined
instead of hanging. Collectives run on NCCL (CUDA) or gloo (CPU); a gloo group beside them
carries the control traffic (step messages, heartbeats), so that a barrier can name a rank
that stopped answering.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed import PrefixStore, TCPStore  # type: ignore[attr-defined]

from r1_runtime.layout import ParallelLayout, RankPlace
from r1_runtime.models.parallel import ModelShard

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5


class RendezvousError(RuntimeError):
    """The group could not form: a rank never joined, or the leader cannot be reached."""


@dataclass(frozen=True)
class Rendezvous:
    address: str
    port: int
    timeout: float  # seconds for every rank to join
    collective_timeout: float  # seconds one collective or message may wait


@dataclass(frozen=True)
class ProcessGroups:
    """This rank's place and its groups, once joined."""

    layout: ParallelLayout
    place: RankPlace
    device: torch.device
    tp_group: Any  # ProcessGroup of this pipeline stage's tensor-parallel ranks
    control: Any  # gloo ProcessGroup of every rank: messages and heartbeats
    collective_timeout: float

    def model_shard(self, num_layers: int) -> ModelShard:
        layout, place = self.layout, self.place
        return ModelShard(
            tp_rank=place.tp_rank,
            tp_size=layout.tensor_parallel_size,
            layers=layout.stage_layers(num_layers, place.pp_rank),
            is_first_stage=place.pp_rank == 0,
            is_last_stage=place.pp_rank == layout.pipeline_parallel_size - 1,
            tp_group=self.tp_group,
        )

    def min_over_ranks(self, value: int) -> int:
        """The smallest of every rank's `value` (e.g. the KV blocks each rank's memory holds)."""
        tensor = torch.tensor([value], dtype=torch.long)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=self.control)
        return int(tensor.item())


def free_port() -> int:
    """A TCP port free on the loopback interface now (for a single-node group)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def join(
    layout: ParallelLayout, place: RankPlace, device: torch.device, rendezvous: Rendezvous
) -> ProcessGroups:
    """Join the replica's group as `place`; raises `RendezvousError` when the group does not
    form within `rendezvous.timeout`."""
    if device.type == "cuda":
        torch.cuda.set_device(place.local_rank)
    store = _store(layout, place, rendezvous)
    store.set(f"joined/{place.rank}", socket.gethostname())
    if place.rank == 0:
        _await_ranks(store, layout, rendezvous.timeout)
        store.set("complete", "1")
    else:
        _wait_for(store, "complete", rendezvous.timeout, "rank 0 to see every rank join")
    timeout = timedelta(seconds=rendezvous.collective_timeout)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        store=PrefixStore("r1", store),
        rank=place.rank,
        world_size=layout.world_size,
        timeout=timeout,
    )
    control = (
        dist.new_group(backend="gloo", timeout=timeout)
        if device.type == "cuda"
        else dist.group.WORLD
    )
    tp_group = None
    for pp_rank in range(layout.pipeline_parallel_size):  # NOTE: every rank creates every group
        group = dist.new_group(layout.tp_group(pp_rank), timeout=timeout)
        if pp_rank == place.pp_rank:
            tp_group = group
    logger.info(
        "rank %d of %d joined (node %d, local rank %d, tp rank %d, pipeline stage %d)",
        place.rank,
        layout.world_size,
        place.node_rank,
        place.local_rank,
        place.tp_rank,
        place.pp_rank,
    )
    return ProcessGroups(layout, place, device, tp_group, control, rendezvous.collective_timeout)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _store(layout: ParallelLayout, place: RankPlace, rendezvous: Rendezvous) -> TCPStore:
    """Rank 0 listens; the others retry connecting until the timeout."""
    deadline = time.monotonic() + rendezvous.timeout
    while True:
        try:
            return TCPStore(
                rendezvous.address,
                rendezvous.port,
                layout.world_size,
                is_master=place.rank == 0,
                timeout=timedelta(seconds=max(1.0, deadline - time.monotonic())),
                wait_for_workers=False,
            )
        except (RuntimeError, OSError) as error:
            if place.rank == 0 or time.monotonic() >= deadline:
                raise RendezvousError(
                    f"rank {place.rank} could not reach the rendezvous at "
                    f"{rendezvous.address}:{rendezvous.port} (MASTER_ADDR:MASTER_PORT) within "
                    f"{rendezvous.timeout:.0f} s: {error}"
                ) from error
            time.sleep(POLL_SECONDS)


def _await_ranks(store: TCPStore, layout: ParallelLayout, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    keys = [f"joined/{rank}" for rank in range(layout.world_size)]
    while True:
        missing = [rank for rank, key in enumerate(keys) if not store.check([key])]
        if not missing:
            return
        if time.monotonic() >= deadline:
            nodes = sorted({rank // layout.local_world_size for rank in missing})
            raise RendezvousError(
                f"ranks {missing} never joined within {timeout:.0f} s (--rendezvous-timeout): "
                f"node ranks {nodes} (pods with LWS_WORKER_INDEX {nodes}) did not start, "
                "crashed, or cannot reach MASTER_ADDR:MASTER_PORT"
            )
        time.sleep(POLL_SECONDS)


def _wait_for(store: TCPStore, key: str, timeout: float, what: str) -> None:
    try:
        store.wait([key], timedelta(seconds=timeout))
    except RuntimeError as error:
        raise RendezvousError(f"gave up waiting for {what} after {timeout:.0f} s") from error
