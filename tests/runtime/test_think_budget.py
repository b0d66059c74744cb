"""The thinking budget: after `max_reasoning_tokens` outputs without `think_end_token_id`, the
scheduler makes the next token `think_end_token_id`, whatever the sampler chose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from r1_runtime.engine import FinishReason, SamplingParams, Scheduler

from . import checkpoints
from .checkpoints import build_model, checkpoint_dir, make_engine, make_prompts, reference_greedy
from .factories import EOS, SAMPLED, add_all, drain, make_requests, make_scheduler

__all__ = ["checkpoint_dir"]

THINK_END = 99


def budget(max_reasoning_tokens: int, **params: Any) -> dict[str, Any]:
    return {"max_reasoning_tokens": max_reasoning_tokens, "think_end_token_id": THINK_END, **params}


def run(sample: Any = SAMPLED, **params: Any) -> list[int]:
    """Output ids of one request run to the end with the factories' scheduler."""
    scheduler: Scheduler = make_scheduler()
    [seq] = make_requests(1, **params)
    add_all(scheduler, [seq])
    drain(scheduler, sample)
    return seq.output_token_ids


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({"max_reasoning_tokens": 4}, "go together", id="a budget with no end id"),
        pytest.param({"think_end_token_id": THINK_END}, "go together", id="an end id alone"),
        pytest.param(budget(-1), "max_reasoning_tokens must be >= 0", id="a negative budget"),
    ],
)
def test_a_half_or_negative_thinking_budget_is_refused(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**params)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(
            budget(3, max_tokens=6),
            [7, 7, 7, THINK_END, 7, 7],
            id="the token after the budget closes the think block",
        ),
        pytest.param(
            budget(0, max_tokens=3), [THINK_END, 7, 7], id="a zero budget closes it at once"
        ),
        pytest.param(
            budget(6, max_tokens=6), [7] * 6, id="a budget as long as max_tokens never fires"
        ),
        pytest.param({"max_tokens": 6}, [7] * 6, id="no budget: the sampler's tokens stand"),
    ],
)
def test_the_budget_forces_the_think_end_token(params: dict[str, Any], expected: list[int]) -> None:
    assert run(**params) == expected


def test_a_think_block_closed_within_budget_is_left_alone() -> None:
    outputs = iter([7, THINK_END, 7, 7, 7, 7])
    assert run(lambda _seq: next(outputs), **budget(3, max_tokens=6)) == [7, THINK_END, 7, 7, 7, 7]


def test_the_forced_token_replaces_an_eos_and_generation_goes_on() -> None:
    outputs = iter([7, 7, EOS, 7])
    assert run(lambda _seq: next(outputs), **budget(2, max_tokens=4)) == [7, 7, THINK_END, 7]


def test_a_forced_token_that_is_a_stop_id_finishes_the_request() -> None:
    scheduler = make_scheduler()
    [seq] = make_requests(1, **budget(2, max_tokens=8, stop_token_ids=frozenset({THINK_END})))
    add_all(scheduler, [seq])
    drain(scheduler)
    assert seq.output_token_ids == [7, 7, THINK_END]
    assert seq.finish_reason is FinishReason.STOP


def test_the_budget_holds_through_preemption() -> None:
    # Two requests that outgrow a tiny cache: the newer is preempted and recomputed.
    scheduler = make_scheduler(num_blocks=5, block_size=4, max_batch_tokens=16)
    seqs = make_requests(2, prompt_len=6, **budget(3, max_tokens=8))
    add_all(scheduler, seqs)
    drain(scheduler)
    assert scheduler.num_preemptions > 0
    assert [seq.output_token_ids for seq in seqs] == [[7, 7, 7, THINK_END, 7, 7, 7, 7]] * 2


def test_the_model_continues_from_the_forced_token(checkpoint_dir: Path) -> None:
    prompt = make_prompts([9])[0]
    model = build_model("qwen2")
    thinking = reference_greedy(model, prompt, 5)
    think_end = next(token for token in range(2, checkpoints.EOS) if token not in thinking)
    params = SamplingParams(
        temperature=0,
        max_tokens=10,
        ignore_eos=True,
        max_reasoning_tokens=5,
        think_end_token_id=think_end,
    )
    [output] = make_engine(checkpoint_dir / "qwen2").generate([prompt], params)
    forced = [*thinking, think_end]
    assert output == forced + reference_greedy(model, prompt + forced, 4)
