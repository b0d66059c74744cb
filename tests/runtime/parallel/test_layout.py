"""The arithmetic of a parallel replica: where each rank sits, which layers each stage holds,
the step message, the micro-batch split, and which bytes of the checkpoint each rank reads.
All in one process: no group is joined."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from r1_runtime.distributed.messages import decode_step, encode_step
from r1_runtime.distributed.stage import split_micro_batches
from r1_runtime.engine.step_inputs import StepEntry
from r1_runtime.layout import ParallelLayout
from r1_runtime.model_info import ModelInfo
from r1_runtime.models.base import PagedCausalLM
from r1_runtime.models.loader import load_weights
from r1_runtime.models.parallel import ModelShard
from r1_runtime.models.registry import OwnModel, own_model

from ..checkpoints import checkpoint_dir

__all__ = ["checkpoint_dir"]

# nodes, T, P -> per rank (node rank, local rank, tp rank, pipeline stage)
RANKS = [
    pytest.param(1, 2, 1, [(0, 0, 0, 0), (0, 1, 1, 0)], id="TP2 on one node"),
    pytest.param(1, 1, 2, [(0, 0, 0, 0), (0, 1, 0, 1)], id="PP2 on one node"),
    pytest.param(
        1, 2, 2, [(0, 0, 0, 0), (0, 1, 1, 0), (0, 2, 0, 1), (0, 3, 1, 1)], id="TP2xPP2, one node"
    ),
    pytest.param(
        2, 2, 2, [(0, 0, 0, 0), (0, 1, 1, 0), (1, 0, 0, 1), (1, 1, 1, 1)], id="TP2xPP2, 2 nodes"
    ),
    pytest.param(2, 4, 1, [(0, 0, 0, 0), (0, 1, 1, 0), (1, 0, 2, 0), (1, 1, 3, 0)], id="TP4 on 2"),
    pytest.param(
        2,
        8,
        2,
        [(0, local, local, 0) for local in range(8)] + [(1, local, local, 1) for local in range(8)],
        id="the R1 example: TP8 inside each node, PP2 across the two",
    ),
]


@pytest.mark.parametrize(("nodes", "tp", "pp", "expected"), RANKS)
def test_each_rank_knows_its_place(
    nodes: int, tp: int, pp: int, expected: list[tuple[int, int, int, int]]
) -> None:
    layout = ParallelLayout(tp, pp, nodes)
    assert layout.problem() is None
    places = [
        layout.place(node, local)
        for node in range(nodes)
        for local in range(layout.local_world_size)
    ]
    assert [place.rank for place in places] == list(range(tp * pp))
    assert [(p.node_rank, p.local_rank, p.tp_rank, p.pp_rank) for p in places] == expected
    for place in places:
        assert place.rank in layout.tp_group(place.pp_rank)
        assert layout.rank_of(place.pp_rank, place.tp_rank) == place.rank


def test_ranks_that_do_not_split_over_the_nodes_are_a_problem() -> None:
    problem = ParallelLayout(3, 1, 2).problem()
    assert problem is not None and "--nnodes 2 does not divide" in problem


@given(st.integers(1, 80), st.integers(1, 8))
def test_stages_hold_every_layer_once_and_differ_by_at_most_one(layers: int, pp: int) -> None:
    layout = ParallelLayout(1, min(pp, layers))
    ranges = [layout.stage_layers(layers, stage) for stage in range(layout.pipeline_parallel_size)]
    assert [index for r in ranges for index in r] == list(range(layers))
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


entries = st.builds(
    StepEntry,
    st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=6),
    st.integers(0, 5000),
    st.lists(st.integers(0, 10**6), max_size=5),
    st.booleans(),
    st.booleans(),
)


@given(st.lists(st.lists(entries, min_size=1, max_size=4).map(tuple), max_size=4))
def test_the_step_message_carries_every_entry_exactly(batches: list[tuple[StepEntry, ...]]) -> None:
    message = encode_step(batches)
    assert message.dtype == torch.int32
    assert decode_step(message) == batches


@given(st.lists(entries, min_size=1, max_size=12).map(tuple), st.integers(1, 4))
def test_micro_batches_keep_the_step_order(step: tuple[StepEntry, ...], count: int) -> None:
    groups = split_micro_batches(step, count)
    assert [entry for group in groups for entry in group] == list(step)
    assert 1 <= len(groups) <= count and all(groups)


def test_micro_batches_share_the_tokens() -> None:
    step = tuple(StepEntry([1] * n, 0, [0], False, True) for n in (1, 1, 1, 1, 8, 8))
    groups = split_micro_batches(step, 2)
    assert [sum(e.num_new_tokens for e in group) for group in groups] == [12, 8]


@pytest.mark.parametrize("name", ["qwen2", "llama"])
@pytest.mark.parametrize("tp", [2, 4])
def test_each_rank_reads_only_its_slices_which_together_are_the_checkpoint(
    checkpoint_dir: Path, name: str, tp: int
) -> None:
    info = ModelInfo.read(checkpoint_dir / name)
    own = own_model(info)
    whole = _loaded(own, info, ModelShard())
    shards = [_loaded(own, info, ModelShard(tp_rank=rank, tp_size=tp)) for rank in range(tp)]
    whole_bytes = whole[1]
    replicated = sum(  # norms (and o/down biases) every rank reads whole
        p.nbytes for n, p in whole[0].named_parameters() if "norm" in n
    )
    kv_bytes = (
        sum(p.nbytes for n, p in whole[0].named_parameters() if "qkv_proj.weight" in n)
        * (own.config.num_kv_heads * 2)
        // (own.config.num_heads + 2 * own.config.num_kv_heads)
    )
    kv_copies = max(1, tp // own.config.num_kv_heads)  # KV heads replicated below T
    for _, bytes_read in shards:
        expected = (whole_bytes - replicated - kv_bytes) / tp + replicated
        expected += kv_bytes * kv_copies / tp
        assert bytes_read == pytest.approx(expected, rel=0.01)
    models = [model for model, _ in shards]
    embed = torch.cat([m.model.embed_tokens.weight for m in models])[: own.config.vocab_size]
    assert torch.equal(embed, whole[0].model.embed_tokens.weight)
    down = torch.cat([m.model.layers[1].mlp.down_proj.weight for m in models], dim=1)
    assert torch.equal(down, whole[0].model.layers[1].mlp.down_proj.weight)


def _loaded(own: OwnModel, info: ModelInfo, shard: ModelShard) -> tuple[PagedCausalLM, int]:
    with torch.device("meta"):
        model = own.model_class(own.config, 64, shard)
    model = model.to(dtype=torch.float32).to_empty(device="cpu")
    model.reset_buffers()
    return model, load_weights(model, info.directory)
