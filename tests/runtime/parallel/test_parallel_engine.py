"""Tensor- and pipeline-parallel replicas on CPU (gloo, one process per rank) produce the
single-process engine's greedy tokens, token for token, through chunked prefills, prefix
cache hits and preemption."""

from __future__ import annotations

from pathlib import Path

import pytest
from r1_runtime.engine.sequence import SamplingParams

from ..checkpoints import ENGINE_DEFAULTS, checkpoint_dir, make_engine, make_prompts
from .replicas import run_replica

__all__ = ["checkpoint_dir"]

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
# Two rounds: the first caches a shared prefix, the second hits it with a mixed batch whose
# KV blocks run out (preemption) under a token budget that chunks the long prompts.
KNOBS = {**ENGINE_DEFAULTS, "num_kv_blocks": 40, "max_batch_tokens": 24}


def rounds() -> list[list[list[int]]]:
    prefix = make_prompts([16], seed=99)[0]
    prompts = make_prompts([9, 30, 3, 21, 14, 2], prefix=prefix)
    return [prompts[:1], prompts[1:]]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "tp", "pp"),
    [
        pytest.param("qwen2", 2, 1, id="qwen2 TP2"),
        pytest.param("qwen2", 1, 2, id="qwen2 PP2"),
        pytest.param("qwen2", 2, 2, id="qwen2 TP2xPP2"),
        pytest.param("llama", 4, 1, id="llama TP4: KV heads replicated, tied embeddings"),
        pytest.param("llama", 2, 2, id="llama TP2xPP2: the last stage reads the tied embedding"),
    ],
)
def test_greedy_tokens_equal_the_single_process_engine(
    checkpoint_dir: Path, name: str, tp: int, pp: int
) -> None:
    path = checkpoint_dir / name
    batches = rounds()
    single = make_engine(path, **KNOBS)
    expected = [output for batch in batches for output in single.generate(batch, GREEDY)]
    assert single.scheduler.num_preemptions > 0 and single.scheduler.num_prefix_cache_hits > 0

    run = run_replica(path, tp=tp, pp=pp, batches=batches, params=GREEDY, **KNOBS)

    assert run.outputs == expected
    assert run.num_preemptions == single.scheduler.num_preemptions
    assert run.num_prefix_cache_hits == single.scheduler.num_prefix_cache_hits
