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

Shard = str | int | tuple[int, int]  # which part of a fused parameter one checkpoint tensor fills


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
    # parameters (by name suffix) that stay fp32 whatever the model's dtype
    fp32_parameters: ClassVar[tuple[str, ...]] = ()
    uses_flash_attention: ClassVar[bool] = True  # whether flash-attn's kernel fits its cache
    config: Any
    shard: ModelShard
    side_tensors: dict[str, torch.Tensor]  # filled by the loader (`keeps_as_is`)

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
        """Our parameter name for checkpoint tensor `name` before fusing; None when this
        rank's part of the model does not hold it."""
        return name

    def keeps_as_is(self, name: str) -> bool:
        """Whether checkpoint tensor `name` is kept as it is stored, beside the parameters
        (`side_tensors`): weights this rank holds for later use but does not run."""
        return False

    def checkpoint_target(self, name: str) -> tuple[str, Shard | None] | None:
        """(our parameter, which part of it) that checkpoint tensor `name` fills on this rank;
        None when this rank does not hold it."""
        held = self.held_parameter(name)
        return None if held is None else packed_target(held, self.packed_modules)

    def shard_view(self, param_name: str, param: torch.Tensor, shard: Shard) -> torch.Tensor:
        """The part of fused parameter `param` that `shard` names (`packed_modules`)."""
        raise ValueError(f"{type(self).__name__} fuses no parameter, yet {param_name} {shard}")

    def expected_shards(self, names: list[str]) -> set[tuple[str, Shard | None]]:
        """Every (parameter, part) the checkpoint must fill, for parameters `names`."""
        shards_of: dict[str, list[Shard | None]] = {}
        for fused, shard in self.packed_modules.values():
            shards_of.setdefault(fused, []).append(shard)
        expected: set[tuple[str, Shard | None]] = set()
        for name in names:
            packed_name = next((part for part in name.split(".") if part in shards_of), None)
            shards = shards_of[packed_name] if packed_name is not None else [None]
            expected.update((name, shard) for shard in shards)
        return expected

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


def packed_target(name: str, packed: dict[str, tuple[str, Shard]]) -> tuple[str, Shard | None]:
    """Our parameter name and shard for a checkpoint name (`...q_proj.weight` fills the `q`
    rows of `...qkv_proj.weight`)."""
    parts = name.split(".")
    for index, part in enumerate(parts):
        if part in packed:
            fused, shard = packed[part]
            return ".".join([*parts[:index], fused, *parts[index + 1 :]]), shard
    return name, None
