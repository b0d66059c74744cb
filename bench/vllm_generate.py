"""Offline generation with vLLM's CPU build, run inside its own venv
(`.cache/bench-peers/vllm`, `make bench-peers`) by `deepseek_v3_throughput.py`: reads
`{"model", "prompts", "new_tokens"}` as JSON on stdin, prints `{"tokens_per_s", ...}`."""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    from vllm import LLM, SamplingParams

    job = json.load(sys.stdin)
    prompts = [{"prompt_token_ids": ids} for ids in job["prompts"]]
    llm = LLM(
        model=job["model"],
        dtype=job.get("dtype", "bfloat16"),
        max_model_len=256,
        max_num_seqs=len(prompts),
        enforce_eager=True,
    )
    params = SamplingParams(temperature=0, max_tokens=job["new_tokens"], ignore_eos=True)
    llm.generate(prompts[:8], params)  # warm-up
    figures = {}
    for name, batches in (("batch", [prompts]), ("one_at_a_time", [[p] for p in prompts[:4]])):
        start, tokens = time.perf_counter(), 0
        for batch in batches:
            outputs = llm.generate(batch, params, use_tqdm=False)
            tokens += sum(len(output.outputs[0].token_ids) for output in outputs)
        seconds = time.perf_counter() - start
        figures[name] = {
            "output_tokens": tokens,
            "seconds": seconds,
            "tokens_per_s": tokens / seconds,
        }
    print("RESULT " + json.dumps(figures))


if __name__ == "__main__":
    main()
