"""The tiny DeepSeek-V3 demo model with R1's fp8 block-quantized weights, on one device
(a GPU where one is visible): tokens/s at batch 64 and one request at a time; JSON out.
Run by bench/device_check.sh:

    PYTHONPATH=runtime python bench/deepseek_v3_device.py --out bench/results/v3_device.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from r1_runtime.build import build_engine
from r1_runtime.config import RuntimeConfig
from r1_runtime.demo import build_demo_model
from r1_runtime.engine import SamplingParams
from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.model_info import ModelInfo

PROMPTS, PROMPT_LEN, NEW_TOKENS = 64, 64, 64


def timed(engine: LLMEngine, prompts: list[list[int]], batch: int) -> dict[str, Any]:
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    start = time.perf_counter()
    outputs = [
        out
        for i in range(0, len(prompts), batch)
        for out in engine.generate(prompts[i : i + batch], params)
    ]
    seconds = time.perf_counter() - start
    tokens = sum(map(len, outputs))
    return {"output_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/deepseek_v3_device.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="v3-fp8-") as directory:
        model = build_demo_model(Path(directory), arch="deepseek_v3", fp8=True)
        config = RuntimeConfig(
            model=model.directory,
            served_model_name="v3",
            dtype="bfloat16",
            max_num_seqs=PROMPTS,
            max_batch_tokens=PROMPTS * PROMPT_LEN,
            max_model_len=PROMPT_LEN + NEW_TOKENS,
            num_kv_blocks=PROMPTS * 16,
        )
        prompts = [[(7 * i + j) % 2000 + 5 for j in range(PROMPT_LEN)] for i in range(PROMPTS)]
        result: dict[str, Any] = {
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "checkpoint": "fp8 e4m3, 128x128 block scales",
        }
        for precision in ("auto", "fp8"):  # dequantized at load; kept in fp8
            engine = build_engine(
                replace(config, precision=precision), ModelInfo.read(model.directory)
            ).engine
            timed(engine, prompts[:4], batch=4)  # warm-up
            result[precision] = {
                "batch_64": timed(engine, prompts, batch=PROMPTS),
                "one_at_a_time": timed(engine, prompts[:4], batch=1),
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for precision in ("auto", "fp8"):
        figures = result[precision]
        print(
            f"DeepSeek-V3 demo, fp8 checkpoint, --precision {precision}, on {result['device']}: "
            f"{figures['batch_64']['tokens_per_s']:.0f} tok/s at batch {PROMPTS}, "
            f"{figures['one_at_a_time']['tokens_per_s']:.0f} tok/s one at a time"
        )


if __name__ == "__main__":
    main()
