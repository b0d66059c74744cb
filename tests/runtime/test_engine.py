"""The engine end to end on tiny checkpoints: greedy outputs equal transformers' `generate`
token for token under every scheduling situation; sampling; the async wrapper."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from r1_runtime.engine import FinishReason, SamplingParams, Sequence
from r1_runtime.engine.async_engine import AsyncEngine, EngineDeadError, RequestHandle
from r1_runtime.engine.llm_engine import InvalidRequestError, PromptTooLongError, QueueFullError
from r1_runtime.engine.sampler import Sampler
from transformers import PreTrainedModel

from .checkpoints import (
    EOS,
    build_model,
    checkpoint_dir,
    make_engine,
    make_prompts,
    reference_greedy,
)

__all__ = ["checkpoint_dir"]

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


@cache
def reference_model(name: str) -> PreTrainedModel:
    return build_model(name)


def references(name: str, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    return [reference_greedy(reference_model(name), prompt, max_tokens) for prompt in prompts]


@dataclass(frozen=True)
class Scenario:
    prompt_lengths: list[int]
    max_tokens: int = 32
    engine: dict[str, Any] = field(default_factory=dict)
    prefix_len: int = 0  # every prompt starts with the same prefix tokens
    staggered: bool = False  # the first prompt runs alone first, caching the shared prefix
    preempts: bool = False  # the KV budget is too small for all of them at once


SCENARIOS = [
    pytest.param(Scenario([13]), id="a single request"),
    pytest.param(Scenario([3, 29, 11, 47, 1]), id="a batch of different prompt lengths"),
    pytest.param(
        Scenario([29, 47, 11], engine={"max_batch_tokens": 8, "max_num_seqs": 4}),
        id="prompts prefilled in chunks under a small token budget",
    ),
    pytest.param(
        Scenario([9, 21, 14, 2], prefix_len=24, staggered=True),
        id="later prompts hit the cached shared prefix",
    ),
    pytest.param(
        Scenario([9, 21, 14], prefix_len=18, engine={"prefill_chunk_size": 5}),
        id="chunked prompts that share a prefix within one batch",
    ),
    pytest.param(
        Scenario([17, 23, 30, 12], max_tokens=32, engine={"num_kv_blocks": 24}, preempts=True),
        id="running requests are preempted and recomputed when blocks run out",
    ),
]


@pytest.mark.parametrize("name", ["qwen2", "llama", "deepseek_v3"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_greedy_outputs_equal_transformers_generate(
    checkpoint_dir: Path, name: str, scenario: Scenario
) -> None:
    prefix = make_prompts([scenario.prefix_len], seed=99)[0]
    prompts = make_prompts(scenario.prompt_lengths, prefix=prefix)
    engine = make_engine(checkpoint_dir / name, **scenario.engine)
    params = SamplingParams(temperature=0.0, max_tokens=scenario.max_tokens, ignore_eos=True)
    if scenario.staggered:
        outputs = engine.generate(prompts[:1], params) + engine.generate(prompts[1:], params)
        assert engine.scheduler.num_prefix_cache_hits >= len(prefix) // 4 * 4 * len(prompts[1:])
    else:
        outputs = engine.generate(prompts, params)
    assert outputs == references(name, prompts, scenario.max_tokens)
    assert (engine.scheduler.num_preemptions > 0) == scenario.preempts
    blocks = engine.scheduler.block_manager
    assert blocks.num_free_blocks == blocks.num_blocks


@pytest.mark.parametrize("name", ["qwen2", "deepseek_v3"])
def test_a_stop_token_ends_generation_where_transformers_stops_at_that_eos(
    checkpoint_dir: Path, name: str
) -> None:
    prompt = make_prompts([11])[0]
    model = reference_model(name)
    stop = reference_greedy(model, prompt, 16)[6]
    expected = model.generate(
        torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=stop
    )[0, len(prompt) :].tolist()
    engine = make_engine(checkpoint_dir / name)
    engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=16, stop_token_ids={stop}))
    outputs = [output for _ in range(40) for output in engine.step()]
    assert [token for output in outputs for token in output.new_token_ids] == expected
    assert outputs[-1].finish_reason is FinishReason.STOP


def test_eos_ids_come_from_config_and_generation_config(
    checkpoint_dir: Path, tmp_path: Path
) -> None:
    assert make_engine(checkpoint_dir / "qwen2").scheduler.config.eos_token_ids == {EOS}
    path = Path(shutil.copytree(checkpoint_dir / "qwen2", tmp_path / "qwen2"))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, EOS]}))
    assert make_engine(path).scheduler.config.eos_token_ids == {7, EOS}


def test_a_full_waiting_queue_is_refused_with_a_typed_error(checkpoint_dir: Path) -> None:
    engine = make_engine(checkpoint_dir / "qwen2", max_waiting=2)
    prompt = make_prompts([5])[0]
    engine.add_request(prompt, GREEDY)
    engine.add_request(prompt, GREEDY)
    with pytest.raises(QueueFullError):
        engine.add_request(prompt, GREEDY)
    assert engine.scheduler.num_waiting == 2


def test_a_prompt_that_fills_max_model_len_is_refused_and_outputs_are_capped(
    checkpoint_dir: Path,
) -> None:
    engine = make_engine(checkpoint_dir / "qwen2", max_model_len=32)
    with pytest.raises(PromptTooLongError):
        engine.add_request(make_prompts([32])[0], GREEDY)
    [output] = engine.generate(make_prompts([28]), GREEDY)
    assert len(output) == 4


def sampled(temperature: float = 1.0, seed: int | None = None, **params: Any) -> SamplingParams:
    return SamplingParams(temperature=temperature, seed=seed, max_tokens=16, **params)


def test_a_seeded_request_samples_the_same_tokens_whatever_runs_beside_it(
    checkpoint_dir: Path,
) -> None:
    engine = make_engine(checkpoint_dir / "qwen2")
    prompts = make_prompts([7, 19, 4, 30])
    [alone] = engine.generate(prompts[:1], sampled(seed=7))
    batch_params = [sampled(seed=7), sampled(seed=3), sampled(), sampled(temperature=0)]
    in_batch = engine.generate(prompts, batch_params)[0]
    [other_seed] = engine.generate(prompts[:1], sampled(seed=8))
    assert in_batch == alone
    assert other_seed != alone


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"top_k": 1}, id="top-k 1"),
        pytest.param({"top_p": 1e-6}, id="a tiny top-p"),
        pytest.param({"top_k": 1, "top_p": 0.5, "temperature": 5.0}, id="top-k 1 at a high heat"),
    ],
)
def test_sampling_restricted_to_one_token_equals_greedy(
    checkpoint_dir: Path, params: dict[str, Any]
) -> None:
    engine = make_engine(checkpoint_dir / "llama")
    prompts = make_prompts([6, 15])
    greedy = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=16))
    assert engine.generate(prompts, sampled(seed=1, **params)) == greedy


def sample_rows(logits: list[float], num_rows: int, **params: Any) -> torch.Tensor:
    seqs = [Sequence(f"s{i}", [1], SamplingParams(**params)) for i in range(num_rows)]
    return Sampler()(torch.tensor([logits]).log().expand(num_rows, -1), seqs)


@pytest.mark.parametrize(
    ("params", "allowed"),
    [
        pytest.param({}, {0, 1, 2}, id="plain sampling draws from every likely token"),
        pytest.param({"top_k": 2}, {0, 1}, id="top-k 2 keeps the two most likely"),
        pytest.param({"top_p": 0.7}, {0, 1}, id="top-p 0.7 keeps the tokens that reach 0.7"),
        pytest.param({"top_p": 0.5}, {0}, id="top-p 0.5 is reached by the first token"),
        pytest.param({"top_k": 3, "top_p": 0.9}, {0, 1, 2}, id="top-k and top-p together"),
    ],
)
def test_sampling_draws_in_proportion_within_top_k_and_top_p(
    params: dict[str, Any], allowed: set[int]
) -> None:
    probs = [0.5, 0.3, 0.2, 0.0]
    tokens = sample_rows(probs, 4000, temperature=1.0, seed=None, **params)
    counts = torch.bincount(tokens, minlength=4).float() / len(tokens)
    kept = torch.tensor([p if i in allowed else 0.0 for i, p in enumerate(probs)])
    torch.testing.assert_close(counts, kept / kept.sum(), atol=0.03, rtol=0)


def test_a_low_temperature_sharpens_and_greedy_rows_take_the_argmax() -> None:
    cold = sample_rows([0.5, 0.3, 0.2, 0.0], 1000, temperature=0.1)
    assert (cold == 0).float().mean() > 0.98
    assert sample_rows([0.2, 0.5, 0.3, 0.0], 8, temperature=0.0).tolist() == [1] * 8


async def collect(handle: RequestHandle) -> tuple[list[int], FinishReason | None, int]:
    """Tokens, finish reason and the number of stream items of one request."""
    tokens: list[int] = []
    num_items = 0
    async for output in handle:
        tokens += output.token_ids
        num_items += 1
    return tokens, handle.finish_reason, num_items


@pytest.mark.asyncio
async def test_the_async_engine_streams_tokens_to_concurrent_consumers(
    checkpoint_dir: Path,
) -> None:
    engine = AsyncEngine(make_engine(checkpoint_dir / "qwen2"))
    try:
        prompts = make_prompts([9, 23])
        handles = [engine.submit(prompt, GREEDY) for prompt in prompts]
        results = await asyncio.gather(*(collect(handle) for handle in handles))
    finally:
        engine.shutdown()
    expected = references("qwen2", prompts, GREEDY.max_tokens)
    assert [tokens for tokens, _, _ in results] == expected
    assert all(reason is FinishReason.LENGTH for _, reason, _ in results)
    assert all(num_items == GREEDY.max_tokens for _, _, num_items in results)


@pytest.mark.asyncio
async def test_an_aborted_request_ends_its_stream_and_frees_its_blocks(
    checkpoint_dir: Path,
) -> None:
    engine = AsyncEngine(make_engine(checkpoint_dir / "qwen2"))
    try:
        long_running = engine.submit(make_prompts([20])[0], SamplingParams(max_tokens=400))
        other = engine.submit(make_prompts([5])[0], GREEDY)
        first = await anext(long_running)
        long_running.abort()
        tokens, reason, _ = await collect(long_running)
        await collect(other)
    finally:
        engine.shutdown()
    assert first.token_ids and len(tokens) < 400 and reason is FinishReason.ABORT
    blocks = engine.engine.scheduler.block_manager
    assert blocks.num_free_blocks == blocks.num_blocks
    assert not engine.engine.has_unfinished


@pytest.mark.asyncio
async def test_the_async_engine_reports_a_full_queue_through_the_stream(
    checkpoint_dir: Path,
) -> None:
    engine = AsyncEngine(make_engine(checkpoint_dir / "qwen2", max_num_seqs=1, max_waiting=1))
    try:
        prompt = make_prompts([5])[0]
        handles = [engine.submit(prompt, SamplingParams(max_tokens=200)) for _ in range(3)]
        with pytest.raises(QueueFullError):
            await collect(handles[2])
    finally:
        engine.shutdown()
    _, reason, _ = await collect(handles[0])
    assert reason is FinishReason.ABORT  # unfinished at shutdown


@pytest.mark.parametrize(
    "prompt",
    [
        pytest.param([], id="an empty prompt"),
        pytest.param([5, -1], id="a negative token id"),
        pytest.param([5, 10**6], id="a token id beyond the vocabulary"),
    ],
)
@pytest.mark.asyncio
async def test_a_bad_prompt_is_refused_through_its_stream_and_the_engine_keeps_serving(
    checkpoint_dir: Path, prompt: list[int]
) -> None:
    engine = AsyncEngine(make_engine(checkpoint_dir / "qwen2"))
    try:
        with pytest.raises(InvalidRequestError):
            await collect(engine.submit(prompt, GREEDY))
        tokens, reason, _ = await collect(engine.submit(make_prompts([5])[0], GREEDY))
    finally:
        engine.shutdown()
    assert (len(tokens), reason) == (GREEDY.max_tokens, FinishReason.LENGTH)


@pytest.mark.parametrize("seed", [-(2**63) - 1, 2**64], ids=["below", "above"])
def test_a_seed_outside_the_generator_range_is_refused(seed: int) -> None:
    with pytest.raises(ValueError, match="seed must be in"):
        SamplingParams(seed=seed)


def test_the_first_output_carries_the_time_spent_waiting_and_later_ones_do_not(
    checkpoint_dir: Path,
) -> None:
    engine = make_engine(checkpoint_dir / "qwen2", max_num_seqs=1)
    first, second = (engine.add_request(p, GREEDY) for p in make_prompts([5, 7]))
    waits: dict[str, list[float | None]] = {first: [], second: []}
    while engine.has_unfinished:
        for output in engine.step():
            waits[output.seq_id].append(output.queue_seconds)
    # The second request waited in the queue while the first ran all its steps.
    assert waits[first][0] is not None and waits[second][0] is not None
    assert waits[second][0] > waits[first][0]
    assert all(wait is None for wait in waits[first][1:] + waits[second][1:])


@pytest.mark.asyncio
async def test_nothing_is_accepted_after_shutdown(checkpoint_dir: Path) -> None:
    engine = AsyncEngine(make_engine(checkpoint_dir / "qwen2"))
    engine.shutdown()
    with pytest.raises(EngineDeadError):
        engine.submit([1, 2, 3], GREEDY)


@pytest.mark.asyncio
async def test_a_failing_step_fails_every_stream_and_stops_the_engine(checkpoint_dir: Path) -> None:
    llm = make_engine(checkpoint_dir / "qwen2")

    def fail(_batch: object) -> list[int]:
        raise RuntimeError("boom")

    llm.runner.run = fail  # type: ignore[method-assign]
    engine = AsyncEngine(llm)
    try:
        handle = engine.submit([1, 2, 3], GREEDY)
        with pytest.raises(EngineDeadError, match="boom"):
            await collect(handle)
        engine._thread.join(timeout=10)
        with pytest.raises(EngineDeadError):
            engine.submit([1, 2, 3], GREEDY)
    finally:
        engine.shutdown()
