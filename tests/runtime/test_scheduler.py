"""Scheduler: budgets, chunked prefill, decode first, preemption, prefix reuse, abort, stops.

Every step goes through `factories.step`, which checks the batch limits and block accounting.
"""

from __future__ import annotations

from typing import Any

import pytest
from r1_runtime.engine import FinishReason, SamplingParams, Sequence, SequenceStatus

from .factories import (
    EOS,
    SAMPLED,
    add_all,
    drain,
    make_config,
    make_prompt,
    make_requests,
    make_scheduler,
    step,
)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"num_blocks": 0}, "num_blocks must be >= 1", id="a cache with no blocks"),
        pytest.param({"block_size": 0}, "block_size must be >= 1", id="blocks with no slots"),
        pytest.param({"max_waiting": 0}, "max_waiting must be >= 1", id="a queue of no requests"),
        pytest.param(
            {"max_batch_tokens": 4, "max_num_seqs": 8},
            "every running sequence decodes",
            id="a token budget smaller than the running sequences' decodes",
        ),
        pytest.param(
            {"prefill_chunk_size": 0}, "prefill_chunk_size must be >= 1", id="an empty chunk"
        ),
    ],
)
def test_a_config_that_cannot_work_is_refused_at_start(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_config(**overrides)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({"temperature": -0.1}, "temperature", id="a negative temperature"),
        pytest.param({"top_p": 0.0}, "top_p", id="a top_p of zero"),
        pytest.param({"top_k": 0}, "top_k", id="a top_k of zero rather than None"),
        pytest.param({"max_tokens": 0}, "max_tokens", id="no tokens to generate"),
    ],
)
def test_sampling_params_that_cannot_work_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**params)


def test_an_empty_prompt_is_refused() -> None:
    with pytest.raises(ValueError, match="empty prompt"):
        Sequence("empty", [])


def test_every_step_fits_the_token_budget_and_the_seat_limit() -> None:
    scheduler = make_scheduler(max_batch_tokens=16, max_num_seqs=4, max_waiting=32)
    seqs = [
        Sequence(f"req-{i}", make_prompt(i, 3 + 7 * i % 29), SamplingParams(max_tokens=1 + i % 5))
        for i in range(20)
    ]
    add_all(scheduler, seqs)
    batches = drain(scheduler)  # `step` asserts both limits on every batch
    assert max(batch.num_tokens for batch in batches) == 16
    assert max(len(batch.seqs) for batch in batches) == 4
    assert all(seq.num_output_tokens == seq.params.max_tokens for seq in seqs)


def test_a_long_prompt_is_prefilled_in_chunks_over_several_steps_then_decoded() -> None:
    scheduler = make_scheduler(max_batch_tokens=8)
    (seq,) = make_requests(1, prompt_len=20, max_tokens=3)
    add_all(scheduler, [seq])
    shapes = []
    for _ in range(5):
        batch, outputs = step(scheduler)
        assert batch is not None
        (entry,) = batch.seqs
        shapes.append((entry.start_position, entry.num_new_tokens, entry.is_prefill, len(outputs)))
    assert shapes == [
        (0, 8, True, 0),
        (8, 8, True, 0),
        (16, 4, True, 1),  # the chunk that reaches the end samples the first token
        (20, 1, False, 1),
        (21, 1, False, 1),
    ]
    assert seq.is_finished and seq.output_token_ids == [SAMPLED] * 3


def test_prefill_chunk_size_caps_each_sequence_chunk_below_the_budget() -> None:
    scheduler = make_scheduler(max_batch_tokens=32, prefill_chunk_size=5)
    add_all(scheduler, make_requests(2, prompt_len=12))
    batch, _ = step(scheduler)
    assert batch is not None
    assert [entry.num_new_tokens for entry in batch.seqs] == [5, 5]


def test_decodes_come_first_and_prefill_gets_the_budget_they_leave() -> None:
    scheduler = make_scheduler(max_batch_tokens=8)
    (early,) = make_requests(1, prompt_len=4, max_tokens=8)
    late = Sequence("late", make_prompt(1, 20))
    add_all(scheduler, [early])
    step(scheduler)
    add_all(scheduler, [late])
    batch, _ = step(scheduler)
    assert batch is not None
    assert [(e.seq.seq_id, e.num_new_tokens, e.is_prefill) for e in batch.seqs] == [
        ("req-0", 1, False),
        ("late", 7, True),
    ]


def test_a_new_request_joins_the_running_batch_at_the_next_step() -> None:
    scheduler = make_scheduler()
    first, second = make_requests(2, max_tokens=6)
    add_all(scheduler, [first])
    step(scheduler)
    step(scheduler)
    add_all(scheduler, [second])
    batch, _ = step(scheduler)
    assert batch is not None
    assert [entry.seq for entry in batch.seqs] == [first, second]
    assert scheduler.num_running == 2


def test_a_finished_sequence_leaves_at_once_and_frees_its_blocks() -> None:
    scheduler = make_scheduler(num_blocks=16)
    short = Sequence("short", make_prompt(9, 5), SamplingParams(max_tokens=1))
    (long,) = make_requests(1, prompt_len=5)
    add_all(scheduler, [short, long])
    _, outputs = step(scheduler)
    assert [(o.seq_id, o.finish_reason) for o in outputs] == [
        ("short", FinishReason.LENGTH),
        ("req-0", None),
    ]
    assert scheduler.running == [long] and short.block_table == []
    assert scheduler.block_manager.num_free_blocks == 16 - len(long.block_table)
    batch, _ = step(scheduler)
    assert batch is not None and [entry.seq for entry in batch.seqs] == [long]


def test_when_blocks_run_out_the_newest_is_preempted_and_recomputed_later() -> None:
    # 4 blocks of 4 slots: two 6-token prompts take 2 blocks each and decode positions 6 and 7;
    # position 8 needs a third block, which only the newer sequence can give up.
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    old, new = make_requests(2, prompt_len=6, max_tokens=5)
    add_all(scheduler, [old, new])
    for _ in range(3):  # prefill, then two decodes
        step(scheduler)
    assert scheduler.num_preemptions == 0
    batch, _ = step(scheduler)
    assert batch is not None and [entry.seq for entry in batch.seqs] == [old]
    assert scheduler.num_preemptions == 1
    assert list(scheduler.waiting) == [new] and new.status is SequenceStatus.WAITING
    assert new.num_computed_tokens == 0 and new.block_table == []
    drain(scheduler)
    for seq in (old, new):
        assert seq.finish_reason is FinishReason.LENGTH
        assert seq.num_tokens == 6 + 5 and seq.output_token_ids == [SAMPLED] * 5


def test_a_preempted_sequence_goes_back_to_the_front_of_the_queue() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4, max_num_seqs=2)
    old, new, queued = make_requests(3, prompt_len=6, max_tokens=5)
    add_all(scheduler, [old, new, queued])
    for _ in range(4):
        step(scheduler)
    assert list(scheduler.waiting) == [new, queued]


def test_a_recomputed_sequence_reuses_its_own_cached_blocks() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    old, new = make_requests(2, prompt_len=6, max_tokens=5)
    add_all(scheduler, [old, new])
    for _ in range(4):
        step(scheduler)
    assert scheduler.num_prefix_cache_hits == 0
    while new.status is SequenceStatus.WAITING:
        step(scheduler)
    assert scheduler.num_prefix_cache_hits > 0


@pytest.mark.parametrize(
    ("prompt_len", "max_tokens", "num_outputs"),
    [
        pytest.param(17, 1, 0, id="a prompt longer than the whole cache ends before it runs"),
        pytest.param(14, 8, 3, id="a lone sequence that outgrows the cache ends with its output"),
    ],
)
def test_a_sequence_that_can_never_fit_ends_with_an_error_instead_of_looping(
    prompt_len: int, max_tokens: int, num_outputs: int
) -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    (seq,) = make_requests(1, prompt_len=prompt_len, max_tokens=max_tokens)
    add_all(scheduler, [seq])
    batches = drain(scheduler)
    assert seq.finish_reason is FinishReason.TOO_LONG
    assert seq.num_output_tokens == num_outputs
    assert batches[-1].finished == (seq,) and batches[-1].num_tokens == 0
    assert scheduler.block_manager.num_free_blocks == 4


def test_a_too_long_sequence_is_reported_by_postprocess() -> None:
    scheduler = make_scheduler(num_blocks=2, block_size=4)
    (seq,) = make_requests(1, prompt_len=9)
    add_all(scheduler, [seq])
    batch = scheduler.schedule()
    assert batch is not None
    outputs = scheduler.postprocess(batch, [])
    assert [(o.seq_id, o.new_token_ids, o.finish_reason) for o in outputs] == [
        ("req-0", [], FinishReason.TOO_LONG)
    ]


def test_a_shared_prefix_is_computed_once_and_counted_as_a_hit() -> None:
    scheduler = make_scheduler(block_size=4)
    prefix = tuple(range(500, 512))  # three full blocks
    first, second = make_requests(2, prompt_len=3, prefix=prefix)
    add_all(scheduler, [first])
    step(scheduler)
    add_all(scheduler, [second])
    batch, _ = step(scheduler)
    assert batch is not None
    entry = batch.seqs[-1]
    assert (entry.seq, entry.start_position, entry.num_new_tokens) == (second, 12, 3)
    assert second.block_table[:3] == first.block_table[:3]
    assert scheduler.num_prefix_cache_queries == 2 * 15
    assert scheduler.num_prefix_cache_hits == 12


def test_a_prefix_computed_in_the_same_step_is_not_reused_yet() -> None:
    scheduler = make_scheduler(block_size=4)
    prefix = tuple(range(500, 512))
    add_all(scheduler, make_requests(2, prompt_len=3, prefix=prefix))
    batch, _ = step(scheduler)
    assert batch is not None
    assert [entry.start_position for entry in batch.seqs] == [0, 0]
    assert scheduler.num_prefix_cache_hits == 0


def test_freed_cached_blocks_are_evicted_when_new_requests_need_room() -> None:
    scheduler = make_scheduler(num_blocks=6, block_size=4)
    (done,) = make_requests(1, prompt_len=12, max_tokens=1)
    add_all(scheduler, [done])
    drain(scheduler)
    assert scheduler.block_manager.num_cached_blocks == 3
    big = Sequence("big", make_prompt(5, 22), SamplingParams(max_tokens=1))
    add_all(scheduler, [big])
    drain(scheduler)
    again = Sequence("again", done.prompt_token_ids, SamplingParams(max_tokens=1))
    add_all(scheduler, [again])
    batch, _ = step(scheduler)
    assert batch is not None and batch.seqs[0].start_position == 0


def _abort_where(where: str) -> tuple[Any, Sequence]:
    scheduler = make_scheduler(num_blocks=16, max_batch_tokens=8)
    seq, other = make_requests(2, prompt_len=12, max_tokens=8)
    add_all(scheduler, [other] if where == "waiting" else [seq, other])
    if where == "waiting":
        step(scheduler)
        add_all(scheduler, [seq])
    elif where == "running":
        for _ in range(4):
            step(scheduler)
        assert not seq.is_prefill
    else:
        step(scheduler)
        assert seq.is_prefill and seq.num_computed_tokens == 8
    return scheduler, seq


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("waiting", id="a waiting request is dropped from the queue"),
        pytest.param("running", id="a decoding request frees its blocks"),
        pytest.param("mid-prefill", id="a half-prefilled request frees its blocks"),
    ],
)
def test_abort_finishes_a_sequence_in_any_state_and_frees_its_blocks(where: str) -> None:
    scheduler, seq = _abort_where(where)
    assert scheduler.abort(seq.seq_id)
    assert seq.finish_reason is FinishReason.ABORT and seq.block_table == []
    assert seq not in scheduler.running and seq not in scheduler.waiting
    assert not scheduler.abort(seq.seq_id)
    step(scheduler)  # checks the block accounting
    drain(scheduler)
    assert scheduler.block_manager.num_free_blocks == 16


def test_abort_between_schedule_and_postprocess_drops_its_sampled_token() -> None:
    scheduler = make_scheduler()
    seq, other = make_requests(2)
    add_all(scheduler, [seq, other])
    batch = scheduler.schedule()
    assert batch is not None
    assert scheduler.abort(seq.seq_id)
    outputs = scheduler.postprocess(batch, [SAMPLED, SAMPLED])
    assert [o.seq_id for o in outputs] == ["req-1"] and seq.num_output_tokens == 0


def test_an_unknown_id_is_not_aborted() -> None:
    assert not make_scheduler().abort("nobody")


def test_a_full_waiting_queue_refuses_new_requests_until_one_is_admitted() -> None:
    scheduler = make_scheduler(max_waiting=2)
    first, second, third = make_requests(3)
    assert scheduler.try_add(first) and scheduler.try_add(second)
    assert not scheduler.try_add(third)
    assert third.status is SequenceStatus.WAITING and scheduler.num_waiting == 2
    step(scheduler)
    assert scheduler.num_waiting == 0 and scheduler.try_add(third)


def test_adding_the_same_id_twice_is_a_caller_error() -> None:
    scheduler = make_scheduler()
    (seq,) = make_requests(1)
    scheduler.try_add(seq)
    with pytest.raises(ValueError, match="already scheduled"):
        scheduler.try_add(Sequence(seq.seq_id, [1, 2]))


@pytest.mark.parametrize(
    ("params", "sampled", "outputs", "reason"),
    [
        pytest.param({}, [7, 8, EOS, 9], [7, 8, EOS], FinishReason.STOP, id="EOS stops"),
        pytest.param(
            {"ignore_eos": True, "max_tokens": 4},
            [7, EOS, 8, 9, 10],
            [7, EOS, 8, 9],
            FinishReason.LENGTH,
            id="EOS is an ordinary token with ignore_eos",
        ),
        pytest.param(
            {"stop_token_ids": frozenset({8})},
            [7, 8, 9],
            [7, 8],
            FinishReason.STOP,
            id="a stop token id stops and is the last output",
        ),
        pytest.param(
            {"stop_token_ids": frozenset({8}), "ignore_eos": True},
            [7, 8],
            [7, 8],
            FinishReason.STOP,
            id="ignore_eos leaves stop token ids in force",
        ),
        pytest.param({"max_tokens": 2}, [7, 7, 7], [7, 7], FinishReason.LENGTH, id="max_tokens"),
    ],
)
def test_a_sequence_stops_on_stop_ids_eos_and_max_tokens(
    params: dict[str, Any], sampled: list[int], outputs: list[int], reason: FinishReason
) -> None:
    scheduler = make_scheduler()
    (seq,) = make_requests(1, **{"max_tokens": 16, **params})
    add_all(scheduler, [seq])
    stream = iter(sampled)
    drain(scheduler, sample=lambda _seq: next(stream))
    assert (seq.output_token_ids, seq.finish_reason) == (outputs, reason)
    assert scheduler.block_manager.num_free_blocks == scheduler.config.num_blocks


def test_postprocess_wants_one_sampled_id_per_sampled_entry() -> None:
    scheduler = make_scheduler()
    add_all(scheduler, make_requests(2))
    batch = scheduler.schedule()
    assert batch is not None
    with pytest.raises(ValueError, match="1 sampled ids for 2"):
        scheduler.postprocess(batch, [SAMPLED])


def test_nothing_to_do_schedules_nothing() -> None:
    scheduler = make_scheduler()
    assert scheduler.schedule() is None and scheduler.is_idle
