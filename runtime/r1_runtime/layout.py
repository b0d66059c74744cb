"""Where each rank of a replica sits: the arithmetic of `--tensor-parallel-size T`,
`--pipeline-parallel-size P` and `--nnodes N`. Pure, no torch.

A replica runs T·P ranks, T·P/N per node (pod), one per local device. Ranks are numbered
node by node (`rank = node_rank * local_world_size + local_rank`); a tensor-parallel group is
T consecutive ranks (`tp_rank = rank % T`) and pipeline stage `rank // T` holds the group, so
tensor parallelism stays inside a node whenever T divides T·P/N (NVLink), and pipeline
stages span nodes (the slower link carries only activations).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RankPlace:
    """One rank's coordinates."""

    rank: int
    node_rank: int
    local_rank: int
    tp_rank: int
    pp_rank: int


@dataclass(frozen=True)
class ParallelLayout:
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    nnodes: int = 1

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def local_world_size(self) -> int:
        """Ranks (and devices) per node."""
        return self.world_size // self.nnodes

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def problem(self) -> str | None:
        """Why this layout cannot run, naming the flags and the fix; None when it can."""
        if self.world_size % self.nnodes:
            return (
                f"--nnodes {self.nnodes} does not divide --tensor-parallel-size times "
                f"--pipeline-parallel-size = {self.world_size}: every node runs the same "
                "number of ranks; choose sizes whose product is a multiple of --nnodes"
            )
        return None

    def stages_problem(self, num_layers: int) -> str | None:
        """Why a model of `num_layers` layers cannot be cut into the pipeline's stages."""
        if self.pipeline_parallel_size > num_layers:
            return (
                f"--pipeline-parallel-size {self.pipeline_parallel_size} exceeds the model's "
                f"{num_layers} layers: every stage needs at least one"
            )
        return None

    def place(self, node_rank: int, local_rank: int) -> RankPlace:
        rank = node_rank * self.local_world_size + local_rank
        return RankPlace(
            rank=rank,
            node_rank=node_rank,
            local_rank=local_rank,
            tp_rank=rank % self.tensor_parallel_size,
            pp_rank=rank // self.tensor_parallel_size,
        )

    def rank_of(self, pp_rank: int, tp_rank: int) -> int:
        return pp_rank * self.tensor_parallel_size + tp_rank

    def tp_group(self, pp_rank: int) -> list[int]:
        """The ranks of pipeline stage `pp_rank`'s tensor-parallel group."""
        return [self.rank_of(pp_rank, tp) for tp in range(self.tensor_parallel_size)]

    def stage_layers(self, num_layers: int, pp_rank: int) -> range:
        """The decoder layers stage `pp_rank` holds: an even split, the first
        `num_layers % P` stages one layer more."""
        base, extra = divmod(num_layers, self.pipeline_parallel_size)
        start = pp_rank * base + min(pp_rank, extra)
        return range(start, start + base + (pp_rank < extra))
