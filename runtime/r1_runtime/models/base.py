"""What every model of ours is to the engine: a causal LM over the paged KV cache, with
Hugging Face parameter names, whose kernels are chosen once (`use_kernels`)."""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import torch

from r1_runtime.layout import ParallelLayout
from r1_runtime.models.kernels import Kernels
from r1_runtime.models.kernels.attention import AttentionMetadata
from r1_runtime.models.layers import KernelModule, Linear
from r1_runtime.models.parallel import ModelShard, TensorSlice

Shard = str | int  # which part of a fused parameter one checkpoint tensor fills


class UnsupportedConfigError(ValueError):
    """The checkpoint is not one our own models run (the transformers fallback may)."""


class PagedCausalLM(KernelModule):
    """A model the engine runs step by step over its paged KV cache.

    Built on the meta device from its config (`config_from`) and the part of it this rank
    holds (`ModelShard`: the whole model by default), allocated empty, then filled by
    `models.loader.load_model`; the engine calls `stage_output` within `step`.
    """

    # checkpoint name -> (our parameter name, shard): the loader fuses these at load time
    packed_modules: ClassVar[dict[str, tuple[str, Shard]]] = {}
    config: Any
    shard: ModelShard

    @classmethod
    @abstractmethod
    def config_from(cls, raw: dict[str, Any]) -> Any:
        """This model's config from config.json; `UnsupportedConfigError` for what it does
        not run."""

    @classmethod
    def parallel_problem(cls, config: Any, layout: ParallelLayout) -> str | None:
        """Why this model cannot be split as `layout` says, naming the flag and the fix;
        None when it can. By default it cannot be split at all."""
        if layout.is_distributed:
            return (
                f"{cls.__name__} does not run tensor or pipeline parallel here: "
                "--tensor-parallel-size and --pipeline-parallel-size must be 1"
            )
        return None

    @abstractmethod
    def reset_buffers(self) -> None:
        """Fill what the checkpoint does not hold (tied weights, rotary tables), once the
        model has its final device and dtype."""

    @abstractmethod
    def shard_offset(self, param_name: str, shard: Shard) -> tuple[int, int]:
        """(first row, number of rows) of a fused parameter that one checkpoint tensor fills."""

    @abstractmethod
    def kv_cache_shape(self, num_blocks: int, block_size: int) -> tuple[int, ...]:
        """The shape of the KV cache tensor for `num_blocks` blocks of `block_size` tokens."""

    @abstractmethod
    def step(self, kv_cache: torch.Tensor, meta: AttentionMetadata) -> AbstractContextManager[None]:
        """The scope of one step: its attention kernels read `kv_cache` and `meta` within."""

    @abstractmethod
    def stage_output(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        sample_indices: torch.Tensor,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One engine step on `[num_tokens]` ids and positions (decodes first), run within
        `step`. On the last pipeline stage: fp32 logits `[num_sampled, vocab]` of the
        `sample_indices` rows; before it: the hidden states `[num_tokens, hidden]` the next
        stage continues from (`hidden`, where the first stage reads `input_ids`)."""

    def held_parameter(self, name: str) -> str | None:
        """Our parameter that checkpoint parameter `name` fills on this rank (after fusing);
        None when this rank's part of the model does not hold it."""
        return name

    def checkpoint_slice(self, param_name: str, shard: Shard | None) -> TensorSlice | None:
        """The part of the checkpoint tensor for `param_name` (and `shard`) this rank reads;
        None: all of it."""
        return None

    def native_decoder(self) -> Any | None:
        """A step of decodes only as one call of compiled code, where this architecture has
        one and the native kernels are loaded; None otherwise."""
        return None

    def use_kernels(self, kernels: Kernels) -> None:
        """Hand every layer the kernels it calls: once, when the model is prepared for a
        backend, before its first step."""
        for module in self.modules():
            if isinstance(module, KernelModule):
                module.kernels = kernels

    def pack_linear_weights(self, batch_size: int) -> None:
        """Move every linear layer's weight into oneDNN's layout (`Linear.pack`); an embedding
        tied to the output keeps its own copy. For CPU inference only: the model cannot be
        loaded into again."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.pack(batch_size)
