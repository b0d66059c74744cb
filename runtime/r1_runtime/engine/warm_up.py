"""The step shapes a server meets, run once through a fresh engine: what the compiling
backends compile (or load) before the first request."""

from __future__ import annotations

from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.engine.sequence import SamplingParams


def warm_up(engine: LLMEngine) -> None:
    """Run one sequence alone (prefill, decodes), several of different lengths (padded
    prefill, batched decodes), a prefill joining running decodes, and a prompt longer than a
    prefill chunk. Leaves the engine idle; the warm-up prompts' blocks stay in the prefix
    cache, evictable."""
    config = engine.scheduler.config
    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    chunk = config.prefill_chunk_size or config.max_batch_tokens
    lengths = [5, 1 + config.block_size, 9]
    _generate(engine, [_prompt(lengths[0], 1)], params)
    _generate(engine, [_prompt(n, 2 + i) for i, n in enumerate(lengths)], params)
    engine.add_request(_prompt(7, 6), params)
    engine.step()  # its prefill; then its decodes in the steps where the next one's prefill runs
    _generate(engine, [_prompt(11, 7)], params)
    long_prompt = min(chunk + 3, engine.max_model_len - params.max_tokens)
    if long_prompt > chunk:
        _generate(engine, [_prompt(long_prompt, 8)], params)


def _generate(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> None:
    for prompt in prompts:
        engine.add_request(prompt, params)
    while engine.has_unfinished:
        engine.step()


def _prompt(length: int, seed: int) -> list[int]:
    """Distinct token ids (no prefix-cache hits between warm-up prompts), all below 256."""
    return [(seed * 31 + 7 * i) % 251 + 1 for i in range(length)]
