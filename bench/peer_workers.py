"""One system under test, kept loaded while `bench/peers.py` measures it against the others.

Runs in that system's own virtual environment, so it imports only what its system needs:

    python bench/peer_workers.py {engine,vllm,llamacpp,transformers} MODEL PROMPTS_JSON DTYPE \
        [BACKEND]

BACKEND (the engine's only: eager, compile) defaults to eager; compile builds into a fresh
temporary entry, so its start-up includes compiling.

Protocol: once loaded and warmed up it prints `READY`; then, for each command read from stdin
(`offline`: every prompt at once, `single`: one prompt at a time), it runs that workload and
prints `RESULT <json>`: output tokens, seconds and output ids. Library logs go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NEW_TOKENS = 64
NUM_SINGLE = 8  # prompts run one at a time
Generate = Callable[[list[list[int]]], list[list[int]]]  # prompts -> output ids, all at once


def engine(model: str, dtype: str, backend: str = "eager") -> Generate:
    import atexit
    import shutil
    import tempfile

    from engine_throughput import build_bench_engine
    from r1_runtime.engine import SamplingParams

    cache = Path(tempfile.mkdtemp(prefix=f"engine-{backend}-"))
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    llm = build_bench_engine(Path(model), dtype, backend, cache).engine
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)

    def generate(prompts: list[list[int]]) -> list[list[int]]:
        return llm.generate(prompts, params)

    return generate


def vllm(model: str, dtype: str) -> Generate:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    # NOTE: on CPU, gpu_memory_utilization is the share of host memory vLLM reserves; its
    # default (0.92) fails beside the other systems. 0.2 leaves gigabytes for the KV cache.
    llm = LLM(
        model=model,
        dtype={"bf16": "bfloat16", "fp32": "float32"}[dtype],
        gpu_memory_utilization=0.2,
        seed=0,
    )
    params = SamplingParams(
        temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, detokenize=False
    )

    def generate(prompts: list[list[int]]) -> list[list[int]]:
        requests = [TokensPrompt(prompt_token_ids=prompt) for prompt in prompts]
        outputs = llm.generate(requests, params, use_tqdm=False)
        return [list(output.outputs[0].token_ids) for output in outputs]

    return generate


def llamacpp(model: str, dtype: str) -> Generate:
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False)

    def generate(prompts: list[list[int]]) -> list[list[int]]:
        (prompt,) = prompts  # one sequence at a time
        ids = []
        for token in llm.generate(prompt, temp=0.0, reset=True):
            ids.append(token)
            if len(ids) == NEW_TOKENS:  # NOTE: EOS ignored, like the other systems
                break
        return [ids]

    return generate


def transformers(model: str, dtype: str) -> Generate:
    """`generate` in one static batch, left-padded."""
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        model, dtype={"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    )

    @torch.inference_mode()
    def generate(prompts: list[list[int]]) -> list[list[int]]:
        width = max(map(len, prompts))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        output = hf.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=0,
        )
        return output[:, width:].tolist()

    return generate


SYSTEMS = {"engine": engine, "vllm": vllm, "llamacpp": llamacpp, "transformers": transformers}


def timed(generate: Generate, groups: list[list[list[int]]]) -> dict[str, Any]:
    start = time.perf_counter()
    outputs = [ids for group in groups for ids in generate(group)]
    seconds = time.perf_counter() - start
    tokens = sum(map(len, outputs))
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "ids": outputs}


def main() -> None:
    name, model, prompts_file, dtype, *backend = sys.argv[1:6]
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # NOTE: whatever the libraries print goes to stderr, away from the protocol
    prompts = json.loads(Path(prompts_file).read_text())
    generate = SYSTEMS[name](model, dtype, *backend)
    generate([prompts[0]])  # warm-up
    if name in ("engine", "vllm"):
        generate(prompts[:8])
    print("READY", file=results)
    workloads = {
        "offline": lambda: timed(generate, [prompts]),  # all at once; for transformers: static
        "single": lambda: timed(generate, [[prompt] for prompt in prompts[:NUM_SINGLE]]),
    }
    for command in sys.stdin:
        print("RESULT", json.dumps(workloads[command.strip()]()), file=results)


if __name__ == "__main__":  # NOTE: vLLM spawns processes that import this module again
    main()
