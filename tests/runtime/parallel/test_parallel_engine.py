"""Tensor- and pipeline-parallel replicas on CPU (gloo, one process per rank) produce the
single-process engine's greedy tokens, token for token, through chunked prefills, prefix
cache hits and preemption."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from r1_runtime.engine.sequence import SamplingParams

from ..checkpoints import ENGINE_DEFAULTS, checkpoint_dir, make_engine, make_prompts
from .replicas import run_replica

__all__ = ["checkpoint_dir"]

BUILD_TIMEOUT_S = 600
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
        pytest.param("deepseek_v3", 2, 1, id="DeepSeek-V3 TP2: heads split, experts parallel"),
        pytest.param("deepseek_v3", 4, 1, id="DeepSeek-V3 TP4: one head and two experts a rank"),
        pytest.param("deepseek_v3", 2, 2, id="DeepSeek-V3 TP2xPP2"),
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


@pytest.mark.slow
def test_a_compiled_tp2_engine_is_built_per_rank_then_served_from_the_cache(
    checkpoint_dir: Path, tmp_path: Path
) -> None:
    """`r1-runtime build` starts the ranks: each compiles its own shard's graph (the
    collectives inside it) while rank 0's warm-up steps run through them, into an entry
    keyed by its rank. The served replica then loads both and builds nothing."""
    path, cache = checkpoint_dir / "qwen2", tmp_path / "engines"
    flags = [
        *("--model", str(path), "--backend", "compile", "--dtype", "float32", "--device", "cpu"),
        *("--max-batch-tokens", "64", "--max-num-seqs", "8", "--num-kv-blocks", "256"),
        *("--tensor-parallel-size", "2", "--engine-cache", str(cache)),
    ]
    command = [sys.executable, "-m", "r1_runtime.cli", "build", *flags]
    built = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert built.returncode == 0, built.stderr[-3000:]
    entries = sorted(cache.glob("*/manifest.json"))
    manifests = [json.loads(entry.read_text()) for entry in entries]
    assert sorted(m["inputs"]["rank"] for m in manifests) == [0, 1]
    assert {m["inputs"]["tensorParallelSize"] for m in manifests} == {2}
    assert json.loads(built.stdout)["built"] is True

    knobs = {k: v for k, v in ENGINE_DEFAULTS.items() if k != "block_size"}  # as built
    prompts = make_prompts([9, 30, 3, 21])
    expected = make_engine(path, **knobs).generate(prompts, GREEDY)
    compiled = {**knobs, "backend": "compile", "engine_cache": cache}
    served = run_replica(path, tp=2, pp=1, batches=[prompts], params=GREEDY, **compiled)

    assert served.outputs == expected
    assert sorted(cache.glob("*/manifest.json")) == entries
    assert [json.loads(entry.read_text()) for entry in entries] == manifests  # not rebuilt
    again = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert again.returncode == 0 and json.loads(again.stdout)["built"] is False
