"""Run one scheduled step on the model and sample: `ScheduledBatch` in, sampled ids out.

Two runners share the contract: `PagedModelRunner` (our decoder over the paged KV cache) and
`RecomputeModelRunner` (the transformers fallback, no cache).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from r1_runtime.engine import kv_cache
from r1_runtime.engine.sampler import Sampler
from r1_runtime.engine.scheduler import ScheduledBatch
from r1_runtime.engine.step_inputs import prepare_inputs
from r1_runtime.models.attention import AttentionMetadata, can_use_flash_attention
from r1_runtime.models.config import DecoderConfig, UnsupportedConfigError, read_config
from r1_runtime.models.decoder import DecoderForCausalLM
from r1_runtime.models.layers import can_pack
from r1_runtime.models.loader import load_decoder

if TYPE_CHECKING:  # NOTE: transformers is imported only when the fallback is used
    from r1_runtime.models.hf_fallback import HFFallbackModel

logger = logging.getLogger(__name__)


class ModelRunner(Protocol):
    def run(self, batch: ScheduledBatch) -> list[int]:
        """Compute the batch's tokens; one sampled id per `batch.sampled` entry, in order."""
        ...


# (input_ids, positions, kv_cache, meta, sample_indices) -> fp32 logits of the sampled rows:
# `DecoderForCausalLM.sampled_logits`, or a compiled form of it
StepLogits = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor], torch.Tensor
]


class PagedModelRunner:
    """Our decoder over a KV cache allocated once (`kv_cache.allocate_kv_cache`)."""

    def __init__(
        self,
        model: DecoderForCausalLM,
        kv_cache: torch.Tensor,
        *,
        use_flash: bool = False,
        sampler: Sampler | None = None,
    ) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.block_size = kv_cache.shape[3]
        self.device = kv_cache.device
        self.use_flash = use_flash
        self.sampler = sampler or Sampler()
        # What runs the model for a step; a backend (`engine.backends`) may replace it.
        self.step_logits: StepLogits = model.sampled_logits

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> list[int]:
        if not batch.seqs:
            return []
        inputs = prepare_inputs(batch, self.block_size, use_flash=self.use_flash).to(self.device)
        logits = self.step_logits(
            inputs.input_ids, inputs.positions, self.kv_cache, inputs.meta, inputs.sample_indices
        )
        if not batch.sampled:
            return []
        sampled = self.sampler(logits, [entry.seq for entry in batch.sampled])
        return list(sampled.tolist())  # NOTE: the step's only host-device sync


class RecomputeModelRunner:
    """The transformers fallback: each sampled sequence is recomputed from its first token."""

    def __init__(self, model: HFFallbackModel, *, sampler: Sampler | None = None) -> None:
        self.model = model
        self.sampler = sampler or Sampler()

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> list[int]:
        seqs = [entry.seq for entry in batch.sampled]
        if not seqs:
            return []
        logits = self.model.last_token_logits([seq.token_ids for seq in seqs])
        return list(self.sampler(logits, seqs).tolist())


@dataclass(frozen=True)
class LoadedRunner:
    runner: ModelRunner
    num_blocks: int
    max_model_len: int


def load_runner(
    model_dir: str | Path,
    *,
    dtype: torch.dtype,
    device: torch.device,
    block_size: int,
    max_num_seqs: int,
    max_model_len: int | None,
    kv_cache_memory: int | None,
    kv_cache_fraction: float,
    num_kv_blocks: int | None,
) -> LoadedRunner:
    """Our paged decoder when config.json's architecture is one we implement, with its KV cache
    allocated once; otherwise the transformers fallback (no cache: its blocks are bookkeeping)."""
    raw = read_config(model_dir)
    max_len = max_model_len or int(raw.get("max_position_embeddings", 4096))
    blocks_per_seq = -(-max_len // block_size)
    try:
        config = DecoderConfig.from_dict(raw)
    except UnsupportedConfigError as error:
        from r1_runtime.models.hf_fallback import HFFallbackModel

        logger.info("%s: using the transformers fallback (%s)", model_dir, error)
        fallback = HFFallbackModel(model_dir, dtype=dtype, device=device)
        num_blocks = num_kv_blocks or max_num_seqs * blocks_per_seq
        return LoadedRunner(RecomputeModelRunner(fallback), num_blocks, max_len)
    model = load_decoder(model_dir, dtype=dtype, device=device, max_positions=max_len)
    if device.type == "cpu" and can_pack(dtype):
        model.pack_linear_weights(batch_size=max_num_seqs)
    num_blocks = num_kv_blocks or kv_cache.num_kv_blocks(
        config,
        block_size=block_size,
        dtype=dtype,
        device=device,
        kv_cache_memory=kv_cache_memory,
        kv_cache_fraction=kv_cache_fraction,
        max_useful_blocks=2 * max_num_seqs * blocks_per_seq,
    )
    cache = kv_cache.allocate_kv_cache(config, num_blocks, block_size, dtype=dtype, device=device)
    use_flash = can_use_flash_attention(device, dtype, block_size)
    return LoadedRunner(PagedModelRunner(model, cache, use_flash=use_flash), num_blocks, max_len)
