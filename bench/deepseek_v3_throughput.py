"""DeepSeek-V3 (R1's architecture) on the engine against today's alternatives, on issue 4's
workload: a tiny random V3 (hidden 512, 8 layers, the first dense, 16 experts in 4 groups,
2 per token plus a shared one, MLA with a 256 + 64 latent; the bench tokenizer's 32000
vocabulary). Systems: the engine (MLA over the latent cache, grouped MoE), the transformers
fallback the runtime used before (no KV cache: every step recomputes every sequence),
transformers' own `generate` (its KV cache), and vLLM's CPU build where it is installed
(`make bench-peers`), in its own venv. Run by `engine_throughput.py --architecture
deepseek-v3`; JSON in bench/results/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from engine_throughput import NEW_TOKENS, RESULTS, build_bench_engine, timed_run
from r1_runtime.engine.kv_cache import bytes_per_block
from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.engine.model_runner import PagedModelRunner, RecomputeModelRunner
from r1_runtime.engine.scheduler import SchedulerConfig
from r1_runtime.model_info import ModelInfo
from r1_runtime.models.hf_fallback import HFFallbackModel
from transformers import AutoModelForCausalLM, DeepseekV3Config

VLLM_VENV = Path(__file__).parents[1] / ".cache" / "bench-peers" / "vllm"
FALLBACK_NEW_TOKENS = 16  # the fallback recomputes everything each step: bounded run time


def build_v3_model(directory: Path, tokenizer_dir: Path) -> Path:
    if (directory / "config.json").exists():
        return directory
    directory.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, directory / name)
    config = DeepseekV3Config(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1536,
        moe_intermediate_size=256,
        num_hidden_layers=8,
        first_k_dense_replace=1,
        num_attention_heads=8,
        num_key_value_heads=8,
        n_routed_experts=16,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        q_lora_rank=128,
        kv_lora_rank=256,  # + qk_rope_head_dim: 320, a latent width vLLM's MLA accepts
        qk_rope_head_dim=64,
        qk_nope_head_dim=64,
        v_head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=0,
        eos_token_id=1,
        topk_method="noaux_tc",  # R1's config.json says so; vLLM reads it
        scoring_func="sigmoid",
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)  # type: ignore[no-untyped-call]
    return directory


def fallback_engine(model_dir: Path, dtype: torch.dtype, num_seqs: int) -> LLMEngine:
    """The runtime's engine over the transformers fallback, as it ran DeepseekV3 before."""
    info = ModelInfo.read(model_dir)
    runner = RecomputeModelRunner(
        HFFallbackModel(model_dir, dtype=dtype, device=torch.device("cpu"))
    )
    config = SchedulerConfig(
        num_blocks=num_seqs * 16,
        block_size=16,
        max_batch_tokens=2048,
        max_num_seqs=num_seqs,
        max_waiting=256,
        eos_token_ids=info.eos_token_ids,
    )
    return LLMEngine(runner, config, 256, info.vocab_size)


@torch.inference_mode()
def transformers_generate(
    model_dir: Path, prompts: list[list[int]], dtype: torch.dtype, batch: int
) -> dict[str, Any]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    groups = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]
    start, tokens = time.perf_counter(), 0
    for group in groups:
        width = max(map(len, group))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in group])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group])
        out = model.generate(
            ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
            do_sample=False, pad_token_id=0,
        )  # fmt: skip
        tokens += (out.shape[1] - width) * len(group)
    seconds = time.perf_counter() - start
    return {"output_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def bench_v3(qwen2_dir: Path, prompts: list[list[int]], dtype_name: str) -> dict[str, Any]:
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    model_dir = build_v3_model(RESULTS / "deepseek-v3-tiny", qwen2_dir)
    engine = build_bench_engine(model_dir, dtype_name, "eager", RESULTS).engine
    runner = engine.runner
    assert isinstance(runner, PagedModelRunner), "DeepseekV3 runs on the engine's own model"
    kv_per_token = bytes_per_block(runner.model, runner.block_size, dtype) // runner.block_size
    timed_run(engine, prompts[:8], concurrent=True)  # warm-up
    ours = timed_run(engine, prompts, concurrent=True)
    ours_single = timed_run(engine, prompts[:4], concurrent=False)
    fallback = fallback_engine(model_dir, dtype, len(prompts))
    short = [prompt[:] for prompt in prompts]
    fallback_run = _timed_fallback(fallback, short)
    hf_batch = transformers_generate(model_dir, prompts, dtype, len(prompts))
    hf_single = transformers_generate(model_dir, prompts[:4], dtype, 1)
    return {
        "kv_bytes_per_token": kv_per_token,
        "engine": {"batch": ours, "one_at_a_time": ours_single},
        "fallback": {"batch": fallback_run, "new_tokens": FALLBACK_NEW_TOKENS},
        "transformers_generate": {"batch": hf_batch, "one_at_a_time": hf_single},
        "engine_vs_fallback_batch": ours["tokens_per_s"] / fallback_run["tokens_per_s"],
        "engine_vs_transformers_batch": ours["tokens_per_s"] / hf_batch["tokens_per_s"],
        "engine_vs_transformers_one_at_a_time": (
            ours_single["tokens_per_s"] / hf_single["tokens_per_s"]
        ),
        "vllm_cpu": vllm_cpu(model_dir, prompts, dtype_name, ours),
    }


def vllm_cpu(
    model_dir: Path, prompts: list[list[int]], dtype_name: str, ours: dict[str, Any]
) -> dict[str, Any] | str:
    """vLLM's figures on the same prompts, and the engine's ratio to them; or why not."""
    python = VLLM_VENV / "bin" / "python"
    if not python.exists():
        return "not run: vLLM's CPU build is not installed (make bench-peers)"
    dtype = {"bf16": "bfloat16", "fp32": "float32"}[dtype_name]
    job = {"model": str(model_dir), "prompts": prompts, "new_tokens": NEW_TOKENS, "dtype": dtype}
    done = subprocess.run(
        [str(python), str(Path(__file__).parent / "vllm_generate.py")],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.splitlines() if "Error: " in line]
        return f"vLLM's CPU build did not run it: {errors[0] if errors else done.stderr[-300:]}"
    figures: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    figures["engine_vs_vllm_batch"] = ours["tokens_per_s"] / figures["batch"]["tokens_per_s"]
    return figures


def _timed_fallback(engine: LLMEngine, prompts: list[list[int]]) -> dict[str, Any]:
    from r1_runtime.engine import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=FALLBACK_NEW_TOKENS, ignore_eos=True)
    start = time.perf_counter()
    outputs = engine.generate(prompts, params)
    seconds = time.perf_counter() - start
    tokens = sum(map(len, outputs))
    return {"output_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
