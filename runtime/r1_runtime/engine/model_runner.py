"""Run one scheduled step on the model and sample: `ScheduledBatch` in, sampled ids out.

Two runners share the contract: `PagedModelRunner` (our model over the paged KV cache, run by
a backend) and `RecomputeModelRunner` (the transformers fallback, no cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from r1_runtime.engine.backends.base import Backend, WarmUp
from r1_runtime.engine.batch import ScheduledBatch
from r1_runtime.engine.sampler import Sampler
from r1_runtime.engine.step_inputs import prepare_inputs, step_entries
from r1_runtime.models.base import PagedCausalLM

if TYPE_CHECKING:  # NOTE: transformers is imported only when the fallback is used
    from r1_runtime.models.hf_fallback import HFFallbackModel


class ModelRunner(Protocol):
    def run(self, batch: ScheduledBatch) -> list[int]:
        """Compute the batch's tokens; one sampled id per `batch.sampled` entry, in order."""
        ...

    def idle(self) -> None:
        """Called every few seconds while no request runs (a replica checks its ranks)."""
        ...


class PagedModelRunner:
    """Our model over a KV cache allocated once, its steps run by `backend` once `prepare`
    has run."""

    def __init__(
        self,
        model: PagedCausalLM,
        kv_cache: torch.Tensor,
        backend: Backend,
        *,
        block_size: int,
        use_flash: bool = False,
    ) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.backend = backend
        self.block_size = block_size
        self.device = kv_cache.device
        self.use_flash = use_flash
        self.sampler = Sampler()

    def prepare(self, entry: Path | None, warm_up: WarmUp) -> None:
        """Prepare the backend (see `Backend.prepare`), once, before the first step; the
        sampler's greedy pick is then the kernels' own."""
        kernels = self.backend.prepare(self.model, self.kv_cache, entry, warm_up)
        self.sampler = Sampler(kernels.argmax)

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> list[int]:
        if not batch.seqs:
            return []
        entries = step_entries(batch)
        inputs = prepare_inputs(entries, self.block_size, use_flash=self.use_flash).to(self.device)
        logits = self.backend.run(inputs)
        if not batch.sampled:
            return []
        sampled = self.sampler(logits, [entry.seq for entry in batch.sampled])
        return list(sampled.tolist())  # NOTE: the step's only host-device sync

    def idle(self) -> None:
        pass


class RecomputeModelRunner:
    """The transformers fallback: each sampled sequence is recomputed from its first token."""

    def __init__(self, model: HFFallbackModel) -> None:
        self.model = model
        self.sampler = Sampler()

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> list[int]:
        seqs = [entry.seq for entry in batch.sampled]
        if not seqs:
            return []
        logits = self.model.last_token_logits([seq.token_ids for seq in seqs])
        return list(self.sampler(logits, seqs).tolist())

    def idle(self) -> None:
        pass
