"""BlockManager: paged blocks, reference counts, prefix caching and eviction."""

from __future__ import annotations

import pytest
from r1_runtime.engine import BlockManager, Sequence


def make_seq(tokens: list[int], seq_id: str = "s") -> Sequence:
    return Sequence(seq_id, tokens)


def compute_all(blocks: BlockManager, seq: Sequence) -> None:
    """Allocate and pretend the model computed every token, publishing full blocks."""
    blocks.allocate(seq)
    start = seq.num_computed_tokens
    seq.num_computed_tokens = seq.num_tokens
    blocks.cache_full_blocks(seq, start)


def test_allocate_takes_one_block_per_block_size_tokens_and_free_returns_them() -> None:
    blocks = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq(list(range(10)))
    assert blocks.can_allocate(seq)
    blocks.allocate(seq)
    assert len(seq.block_table) == 3
    assert (blocks.num_free_blocks, blocks.usage) == (5, 3 / 8)
    assert all(blocks.ref_count(block_id) == 1 for block_id in seq.block_table)
    blocks.free(seq)
    assert (blocks.num_free_blocks, blocks.usage) == (8, 0.0)
    assert seq.block_table == [] and seq.num_computed_tokens == 0
    assert all(blocks.ref_count(block_id) == 0 for block_id in range(8))


def test_allocate_is_refused_when_too_few_blocks_are_free() -> None:
    blocks = BlockManager(num_blocks=3, block_size=4)
    blocks.allocate(make_seq(list(range(8)), "a"))
    big = make_seq(list(range(100, 108)), "b")
    assert not blocks.can_allocate(big)
    assert blocks.num_free_blocks == 1
    with pytest.raises(RuntimeError, match="no free KV block"):
        blocks.allocate(big)


def test_allocate_twice_is_a_caller_error() -> None:
    blocks = BlockManager(num_blocks=4, block_size=4)
    seq = make_seq([1, 2, 3])
    blocks.allocate(seq)
    with pytest.raises(ValueError, match="already holds"):
        blocks.allocate(seq)


@pytest.mark.parametrize(
    ("num_tokens", "num_new", "num_new_blocks"),
    [
        pytest.param(3, 1, 0, id="a token that fits in the last block needs no new block"),
        pytest.param(4, 1, 1, id="a token after a full last block needs one new block"),
        pytest.param(4, 5, 2, id="five tokens after a full block need two blocks"),
        pytest.param(6, 2, 0, id="two tokens that fill the last block need none"),
    ],
)
def test_append_slots_grows_the_table_only_past_the_last_block(
    num_tokens: int, num_new: int, num_new_blocks: int
) -> None:
    blocks = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq(list(range(num_tokens)))
    blocks.allocate(seq)
    seq.num_computed_tokens = num_tokens
    before = len(seq.block_table)
    assert blocks.can_append_slots(seq, num_new)
    blocks.append_slots(seq, num_new)
    assert len(seq.block_table) - before == num_new_blocks


def test_append_slots_is_refused_when_no_block_is_free() -> None:
    blocks = BlockManager(num_blocks=2, block_size=2)
    seq = make_seq([1, 2, 3, 4])
    blocks.allocate(seq)
    seq.num_computed_tokens = 4
    assert not blocks.can_append_slots(seq, 1)
    assert blocks.can_append_slots(seq, 0)


@pytest.mark.parametrize(
    ("cached", "prompt", "num_hit_tokens"),
    [
        pytest.param(
            list(range(10)), list(range(10)), 8, id="a partial last block: every full block hits"
        ),
        pytest.param(
            list(range(8)), list(range(8)), 4, id="all full blocks: the last is left to compute"
        ),
        pytest.param(list(range(8)), [0, 1, 2, 3, 9, 9, 9, 9, 9], 4, id="a shared first block"),
        pytest.param([0], [0], 0, id="a one-token prompt never hits"),
        pytest.param(
            [5, 5, 5, 5, 0, 1, 2, 3],
            [9, 9, 9, 9, 0, 1, 2, 3, 4],
            0,
            id="equal tokens after another prefix miss",
        ),
    ],
)
def test_a_prefix_hit_reuses_full_blocks_and_counts_as_computed(
    cached: list[int], prompt: list[int], num_hit_tokens: int
) -> None:
    blocks = BlockManager(num_blocks=16, block_size=4)
    first = make_seq(cached, "first")
    compute_all(blocks, first)
    first_table = list(first.block_table)
    blocks.free(first)
    second = make_seq(prompt, "second")
    blocks.allocate(second)
    num_hit_blocks = num_hit_tokens // 4
    assert second.num_computed_tokens == num_hit_tokens
    assert second.block_table[:num_hit_blocks] == first_table[:num_hit_blocks]
    assert not set(second.block_table[num_hit_blocks:]) & set(first_table[:num_hit_blocks])
    assert blocks.num_prefix_cache_queries == len(cached) + len(prompt)
    assert blocks.num_prefix_cache_hits == num_hit_tokens


def test_a_block_shared_by_running_sequences_is_freed_by_its_last_user() -> None:
    blocks = BlockManager(num_blocks=8, block_size=4)
    first, second = make_seq(list(range(6)), "first"), make_seq(list(range(7)), "second")
    compute_all(blocks, first)
    blocks.allocate(second)
    shared = first.block_table[0]
    assert second.block_table[0] == shared and blocks.ref_count(shared) == 2
    assert blocks.can_allocate(make_seq(list(range(6)), "third"))
    blocks.free(first)
    assert blocks.ref_count(shared) == 1 and blocks.num_free_blocks == 6
    blocks.free(second)
    assert blocks.ref_count(shared) == 0 and blocks.num_free_blocks == 8
    assert blocks.num_cached_blocks == 1


def test_can_allocate_counts_a_free_cached_hit_as_no_longer_free() -> None:
    blocks = BlockManager(num_blocks=3, block_size=2)
    first = make_seq([1, 2, 3, 4, 5], "first")
    compute_all(blocks, first)
    blocks.free(first)
    # Three blocks, two of them free and cached: the hit takes two, one is left for the tail.
    assert blocks.can_allocate(make_seq([1, 2, 3, 4, 5, 6], "fits"))
    assert not blocks.can_allocate(make_seq([1, 2, 3, 4, 5, 6, 7], "one block short"))


def test_the_same_prefix_computed_twice_at_once_is_published_once() -> None:
    blocks = BlockManager(num_blocks=8, block_size=4)
    first, second = make_seq(list(range(5)), "first"), make_seq(list(range(5)), "second")
    blocks.allocate(first)
    blocks.allocate(second)
    for seq in (first, second):
        seq.num_computed_tokens = 5
        blocks.cache_full_blocks(seq, 0)
    assert first.block_table[0] != second.block_table[0]
    assert blocks.num_cached_blocks == 1
    blocks.free(first)
    blocks.free(second)
    assert blocks.num_free_blocks == 8 and blocks.num_cached_blocks == 1


def test_fresh_blocks_come_from_uncached_free_blocks_before_any_eviction() -> None:
    blocks = BlockManager(num_blocks=5, block_size=2)
    cached = make_seq([1, 2, 3, 4], "cached")
    compute_all(blocks, cached)
    blocks.free(cached)
    blocks.allocate(make_seq([9, 9, 9, 9], "other"))
    assert blocks.num_cached_blocks == 2
    assert blocks.can_allocate(make_seq([1, 2, 3, 4, 5], "again"))


def test_under_pressure_free_cached_blocks_are_evicted_tail_first_oldest_first() -> None:
    blocks = BlockManager(num_blocks=6, block_size=2)
    old, new = make_seq([1, 2, 3, 4, 5], "old"), make_seq([6, 7, 8, 9, 10], "new")
    for seq in (old, new):
        compute_all(blocks, seq)
    blocks.free(old)
    blocks.free(new)
    assert blocks.num_cached_blocks == 4
    # Two plain blocks are free, so a 3-block sequence evicts one cached block: old's tail.
    pressure = make_seq([20, 21, 22, 23, 24, 25], "pressure")
    blocks.allocate(pressure)
    assert blocks.num_cached_blocks == 3
    blocks.free(pressure)
    probe_old, probe_new = make_seq([1, 2, 3, 4, 0], "p1"), make_seq([6, 7, 8, 9, 0], "p2")
    blocks.allocate(probe_old)
    blocks.allocate(probe_new)
    assert (probe_old.num_computed_tokens, probe_new.num_computed_tokens) == (2, 4)


def test_block_manager_needs_at_least_one_block_of_one_slot() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        BlockManager(num_blocks=0, block_size=16)
