"""Paged KV cache bookkeeping: reference-counted blocks with prefix caching. Plain Python.

A block holds the keys and values of `block_size` consecutive tokens of one or more sequences.
A full block whose KV has been computed is published under a chained hash of its tokens, so a
later sequence with the same prefix reuses it instead of computing it again.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque

from r1_runtime.engine.sequence import Sequence


class BlockManager:
    """Owns `num_blocks` KV blocks of `block_size` token slots each.

    A block is in use (reference count > 0: in the block table of that many running sequences)
    or free. Free blocks that hold a published prefix stay reusable by hash until a fresh block
    is needed and none without a hash is left; then the least recently freed one is evicted.
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks and block_size must be >= 1: {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._ref_counts = [0] * num_blocks
        self._free_plain: deque[int] = deque(range(num_blocks))  # free, holding no prefix
        self._free_cached: OrderedDict[int, None] = OrderedDict()  # free, by hash; oldest first
        self._hash_of_block: dict[int, bytes] = {}
        self._block_of_hash: dict[bytes, int] = {}
        self.num_prefix_cache_queries = 0  # tokens of admitted sequences
        self.num_prefix_cache_hits = 0  # of those, tokens found already computed

    @property
    def num_free_blocks(self) -> int:
        """Blocks no sequence uses, cached ones included (they are evicted when needed)."""
        return len(self._free_plain) + len(self._free_cached)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks published under a prefix hash, in use or free."""
        return len(self._block_of_hash)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use, from 0.0 to 1.0."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, seq: Sequence) -> bool:
        """Whether `allocate(seq)` would succeed. Changes nothing."""
        hits = self._cached_prefix(seq)
        num_new = self.num_blocks_for(seq.num_tokens) - len(hits)
        num_revived = sum(1 for block_id in hits if self._ref_counts[block_id] == 0)
        return num_new <= self.num_free_blocks - num_revived

    def allocate(self, seq: Sequence) -> None:
        """Give a sequence that holds no blocks slots for all its tokens. Its longest cached
        prefix of full blocks is reused and counts as computed.

        NOTE: a hit never covers the last token, so at least one token is left to compute and
        the model produces logits for it; the hit is whole blocks, so cached blocks are never
        written again.
        """
        if seq.block_table or seq.num_computed_tokens:
            raise ValueError(f"sequence {seq.seq_id!r} already holds KV blocks")
        hits = self._cached_prefix(seq)
        for block_id in hits:
            if self._ref_counts[block_id] == 0:
                del self._free_cached[block_id]
            self._ref_counts[block_id] += 1
        seq.block_table = hits
        seq.num_computed_tokens = len(hits) * self.block_size
        self.num_prefix_cache_queries += seq.num_tokens
        self.num_prefix_cache_hits += seq.num_computed_tokens
        self.append_slots(seq, seq.num_uncomputed_tokens)

    def can_append_slots(self, seq: Sequence, num_new_tokens: int = 1) -> bool:
        """Whether the block table can grow to hold `num_new_tokens` past the computed ones."""
        return self._num_missing_blocks(seq, num_new_tokens) <= self.num_free_blocks

    def append_slots(self, seq: Sequence, num_new_tokens: int = 1) -> None:
        """Grow the block table to hold `num_new_tokens` past the computed ones (a decode step
        needs one slot: a new block only when the last one is full)."""
        for _ in range(self._num_missing_blocks(seq, num_new_tokens)):
            block_id = self._take_free_block()
            self._ref_counts[block_id] = 1
            seq.block_table.append(block_id)

    def cache_full_blocks(self, seq: Sequence, start_position: int) -> None:
        """Publish the blocks that became full of computed tokens since `start_position`. Call
        once the step that computed them has run.

        NOTE: a hash already published by another block (the same prefix computed twice at
        once) keeps its block; this one stays private and is freed without a hash.
        """
        first = start_position // self.block_size
        for index in range(first, seq.num_computed_tokens // self.block_size):
            block_hash = self._block_hash(seq, index)
            if block_hash not in self._block_of_hash:
                block_id = seq.block_table[index]
                self._block_of_hash[block_hash] = block_id
                self._hash_of_block[block_id] = block_hash

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's blocks; it then has no computed tokens. Freed blocks holding a
        published prefix stay reusable, the sequence's tail being the first to be evicted."""
        for block_id in reversed(seq.block_table):
            self._ref_counts[block_id] -= 1
            # NOTE: a block is in the block tables of exactly ref_count running sequences, so
            # the count reaches zero once, when its last user frees it, and never goes below.
            if self._ref_counts[block_id] == 0:
                if block_id in self._hash_of_block:
                    self._free_cached[block_id] = None
                else:
                    self._free_plain.append(block_id)
        seq.block_table = []
        seq.num_computed_tokens = 0

    def _num_missing_blocks(self, seq: Sequence, num_new_tokens: int) -> int:
        needed = self.num_blocks_for(seq.num_computed_tokens + num_new_tokens)
        return max(0, needed - len(seq.block_table))

    def _take_free_block(self) -> int:
        if self._free_plain:
            return self._free_plain.popleft()
        if not self._free_cached:
            raise RuntimeError("no free KV block: check can_allocate/can_append_slots first")
        block_id, _ = self._free_cached.popitem(last=False)
        del self._block_of_hash[self._hash_of_block.pop(block_id)]
        return block_id

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids holding the longest cached prefix, leaving the last token uncovered."""
        blocks: list[int] = []
        for index in range((seq.num_tokens - 1) // self.block_size):
            block_id = self._block_of_hash.get(self._block_hash(seq, index))
            if block_id is None:
                break
            blocks.append(block_id)
        return blocks

    def _block_hash(self, seq: Sequence, index: int) -> bytes:
        """Hash of (parent block's hash, this block's tokens); memoized on the sequence.

        NOTE: SHA-256, not hash(): Python's hash of ints is predictable, so a crafted prompt
        could collide with another tenant's prefix and read its cache. See
        https://github.com/vllm-project/vllm/security/advisories/GHSA-rm76-4mrf-v9r8
        """
        hashes = seq.block_hashes
        size = self.block_size
        while len(hashes) <= index:
            parent = hashes[-1] if hashes else b""
            start = len(hashes) * size
            tokens = array("q", seq.token_ids[start : start + size]).tobytes()
            hashes.append(hashlib.sha256(parent + tokens).digest())
        return hashes[index]
