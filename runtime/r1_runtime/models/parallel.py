"""The part of a model one rank holds, and the collectives its layers call.

Tensor parallelism follows Megatron-LM: a column-parallel projection (q/k/v, gate/up) keeps
`1/T` of the output features, the row-parallel projection after it (o, down) `1/T` of the
input features, and one all-reduce of the hidden state closes each attention and MLP block.
The embedding and the output projection split the vocabulary. Pipeline parallelism keeps the
decoder layers of one stage; the embedding lives on the first, the final norm and the output
projection on the last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class CollectiveTraffic:
    """What this rank's tensor-parallel collectives carried so far, in bytes of payload (a
    ring all-reduce puts about twice that on the wire); counted when the model runs op by op
    (eager), not inside a compiled graph."""

    all_reduce_bytes: int = 0
    all_gather_bytes: int = 0


@dataclass(frozen=True)
class ModelShard:
    """Which part of the model this rank holds; the whole model by default."""

    tp_rank: int = 0
    tp_size: int = 1
    layers: range | None = None  # this pipeline stage's decoder layers; None: all
    is_first_stage: bool = True
    is_last_stage: bool = True
    tp_group: Any = field(default=None, compare=False)  # torch.distributed ProcessGroup
    traffic: CollectiveTraffic = field(default_factory=CollectiveTraffic, compare=False)

    def stage_layers(self, num_layers: int) -> range:
        return self.layers if self.layers is not None else range(num_layers)

    def split(self, size: int, what: str) -> int:
        """`size / T`, refusing a size that does not split evenly."""
        if size % self.tp_size:
            raise ValueError(f"{what} ({size}) is not divisible by --tensor-parallel-size")
        return size // self.tp_size

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of `x` over the tensor-parallel group, in place."""
        if self.tp_size > 1:
            dist.all_reduce(x, group=self.tp_group)
            if not torch.compiler.is_compiling():  # NOTE: symbolic sizes within a graph
                self.traffic.all_reduce_bytes += x.nbytes
        return x

    def all_gather_columns(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's `x` `[rows, n]` side by side: `[rows, n * T]`, rank order."""
        if self.tp_size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.tp_size)]
        dist.all_gather(parts, x.contiguous(), group=self.tp_group)
        if not torch.compiler.is_compiling():
            self.traffic.all_gather_bytes += x.nbytes * self.tp_size
        return torch.cat(parts, dim=-1)


@dataclass(frozen=True)
class TensorSlice:
    """The part of a checkpoint tensor one rank reads: `size` rows (dim 0) or columns (dim 1)
    from `start`. Fewer than `size` remain at the end of a padded vocabulary."""

    dim: int
    start: int
    size: int


def kv_head_range(num_kv_heads: int, shard: ModelShard) -> range:
    """The KV heads rank `tp_rank` holds: `num_kv_heads / T` of them, or the one its query
    heads read when there are fewer KV heads than ranks (replicated over `T / num_kv_heads`
    ranks)."""
    size, rank = shard.tp_size, shard.tp_rank
    if num_kv_heads >= size:
        local = shard.split(num_kv_heads, "num_key_value_heads")
        return range(rank * local, (rank + 1) * local)
    if size % num_kv_heads:
        raise ValueError(
            f"--tensor-parallel-size ({size}) must divide num_key_value_heads ({num_kv_heads}) "
            "or be a multiple of it"
        )
    head = rank // (size // num_kv_heads)
    return range(head, head + 1)
