"""One rank's part of a step: its pipeline stage's layers, its tensor-parallel shard.

Micro-batches flow through the stages back to back: stage s sends micro-batch i's hidden
states to stage s+1 (point to point, each tensor-parallel rank to its peer) and goes on with
micro-batch i+1 while s+1 works on i, so that with M micro-batches over P stages a stage idles
(P-1)/(M+P-1) of the step rather than (P-1)/P. The last stage's first tensor-parallel rank
sends the sampled rows' logits to rank 0, which samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from r1_runtime.distributed.group import ProcessGroups
from r1_runtime.distributed.messages import MicroBatches, wait
from r1_runtime.engine.backends.base import Backend, WarmUp
from r1_runtime.engine.step_inputs import StepEntry, prepare_inputs
from r1_runtime.models.base import PagedCausalLM
from r1_runtime.models.kernels import Kernels

HIDDEN_TAG = 2
LOGITS_TAG = 3


@dataclass
class StageTimes:
    """Seconds this rank spent computing and in all, over the steps so far: the pipeline
    bubble is what is left of the total once the compute is taken out."""

    compute: float = 0.0
    total: float = 0.0
    bytes_sent: int = 0
    steps: int = 0


class StageRunner:
    def __init__(
        self,
        groups: ProcessGroups,
        backend: Backend,
        model: PagedCausalLM,
        kv_cache: torch.Tensor,
        *,
        dtype: torch.dtype,
        block_size: int,
        use_flash: bool,
    ) -> None:
        self.groups = groups
        self.backend = backend
        self.model = model
        self.kv_cache = kv_cache
        self.kernels: Kernels | None = None  # the backend's, once prepared
        self.hidden_size = model.config.hidden_size
        self.vocab_size = model.config.vocab_size
        self.dtype = dtype
        self.block_size = block_size
        self.use_flash = use_flash
        self.times = StageTimes()
        layout, place = groups.layout, groups.place
        self.is_first = place.pp_rank == 0
        self.is_last = place.pp_rank == layout.pipeline_parallel_size - 1
        self.previous = layout.rank_of(place.pp_rank - 1, place.tp_rank)
        self.next = layout.rank_of(place.pp_rank + 1, place.tp_rank)
        self.logits_rank = layout.rank_of(layout.pipeline_parallel_size - 1, 0)

    def prepare(self, entry: Path | None, warm_up: WarmUp) -> None:
        """Prepare the backend (`Backend.prepare`) on this rank's shard and cache."""
        self.kernels = self.backend.prepare(self.model, self.kv_cache, entry, warm_up)

    @torch.inference_mode()
    def execute(self, micro_batches: MicroBatches) -> list[torch.Tensor]:
        """Run this rank's part of every micro-batch; on rank 0, the sampled rows' fp32 logits
        of each micro-batch, in order (empty elsewhere)."""
        started = time.perf_counter()
        device, place = self.groups.device, self.groups.place
        pending: list[Any] = []
        outputs: list[torch.Tensor] = []
        for entries in micro_batches:
            inputs = prepare_inputs(entries, self.block_size, use_flash=self.use_flash).to(device)
            if not self.is_first:
                hidden = self._receive((len(inputs.input_ids), self.hidden_size), self.dtype)
                inputs = replace(inputs, hidden=hidden)
            computed = time.perf_counter()
            out = self.backend.run(inputs)
            self.times.compute += time.perf_counter() - computed
            if not self.is_last:
                pending.append(self._send(out, self.next, HIDDEN_TAG))
            elif place.rank == 0:
                outputs.append(out)
            elif place.tp_rank == 0 and _num_sampled(entries):
                pending.append(self._send(out, 0, LOGITS_TAG))
        if place.rank == 0 and not self.is_last:
            outputs = [self._logits(entries) for entries in micro_batches]
        for work in pending:
            wait(work, self.groups.collective_timeout)
        self.times.total += time.perf_counter() - started
        self.times.steps += 1
        return outputs

    def _logits(self, entries: tuple[StepEntry, ...]) -> torch.Tensor:
        shape = (_num_sampled(entries), self.vocab_size)
        if not shape[0]:
            return torch.empty(shape, dtype=torch.float32, device=self.groups.device)
        return self._receive(shape, torch.float32, source=self.logits_rank, tag=LOGITS_TAG)

    def _send(self, tensor: torch.Tensor, rank: int, tag: int) -> Any:
        tensor = tensor.contiguous()
        self.times.bytes_sent += tensor.nbytes
        return dist.isend(tensor, rank, tag=tag)

    def _receive(
        self,
        shape: tuple[int, int],
        dtype: torch.dtype,
        *,
        source: int | None = None,
        tag: int = HIDDEN_TAG,
    ) -> torch.Tensor:
        tensor = torch.empty(shape, dtype=dtype, device=self.groups.device)
        rank = self.previous if source is None else source
        wait(dist.irecv(tensor, rank, tag=tag), self.groups.collective_timeout)
        return tensor


def _num_sampled(entries: tuple[StepEntry, ...]) -> int:
    return sum(entry.is_sampled for entry in entries)


def split_micro_batches(entries: tuple[StepEntry, ...], count: int) -> MicroBatches:
    """At most `count` contiguous groups of entries (order kept, so the sampled rows stay in
    step order), cut where the running token count passes each equal share."""
    total = sum(entry.num_new_tokens for entry in entries)
    groups: MicroBatches = []
    current: list[StepEntry] = []
    seen = 0
    for entry in entries:
        current.append(entry)
        seen += entry.num_new_tokens
        if seen * count >= total * (len(groups) + 1) and len(groups) < count - 1:
            groups.append(tuple(current))
            current = []
    if current:
        groups.append(tuple(current))
    return groups
