"""Offline throughput of the engine on issue 4's workload; writes JSON to bench/results/.

Workload: 64 prompts of 48-80 tokens cut from the CPython standard library sources on this
machine, 64 new tokens each, greedy, EOS ignored, on a tiny random Qwen2 (hidden 512, 8
layers, 8 heads, 2 KV heads, intermediate 1536, vocab 32000, tied embeddings; ~40M
parameters) with a byte-level BPE trained on the same sources. Model and tokenizer are built
once, deterministically, under bench/results/. Not part of the test suite.

    .venv/bin/python bench/engine_throughput.py [--dtypes bf16 fp32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import resource
import statistics
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from r1_runtime.build import BuiltEngine, build_engine
from r1_runtime.config import RuntimeConfig
from r1_runtime.engine import SamplingParams
from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.engine.model_runner import PagedModelRunner
from r1_runtime.model_info import ModelInfo
from r1_runtime.models.kernels.ops import can_pack
from r1_runtime.models.layers import Linear
from safetensors import safe_open
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Qwen2Config, Qwen2ForCausalLM

RESULTS = Path(__file__).parent / "results"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_NAMES = {"bf16": "bfloat16", "fp32": "float32"}
NUM_PROMPTS, MIN_PROMPT, MAX_PROMPT, NEW_TOKENS = 64, 48, 80, 64
SPECIAL_TOKENS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"]  # noqa: RUF001


def stdlib_sources() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [path.read_text(errors="replace") for path in sorted(root.glob("*.py"))]


def build_model(directory: Path) -> Path:
    """Write the benchmark checkpoint and tokenizer once (seed 0); reuse them afterwards."""
    if (directory / "config.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=32000,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(stdlib_sources(), trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL_TOKENS[0],
        "eos_token": SPECIAL_TOKENS[1],
        "unk_token": None,  # NOTE: an unknown unk_token grows the vocabulary in transformers 5
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    config = Qwen2Config(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        max_position_embeddings=2048,
        bos_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    return directory


def make_prompts(model_dir: Path, seed: int = 0) -> list[list[int]]:
    """Token windows of 48-80 tokens at random places in random stdlib files."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    sources = [source for source in stdlib_sources() if len(source) > 4000]
    rng = random.Random(seed)
    prompts = []
    for _ in range(NUM_PROMPTS):
        source = rng.choice(sources)
        start = rng.randrange(len(source) - 2000)
        ids = tokenizer.encode(source[start : start + 2000]).ids
        prompts.append(ids[: rng.randint(MIN_PROMPT, MAX_PROMPT)])
    return prompts


def timed_run(engine: LLMEngine, prompts: list[list[int]], concurrent: bool) -> dict[str, Any]:
    """Output tokens/s and step times, all prompts at once or one after another."""
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    step_times: list[float] = []
    num_tokens = 0
    start = time.perf_counter()
    for group in [prompts] if concurrent else [[prompt] for prompt in prompts]:
        for prompt in group:
            engine.add_request(prompt, params)
        while engine.has_unfinished:
            step_start = time.perf_counter()
            outputs = engine.step()
            step_times.append(time.perf_counter() - step_start)
            num_tokens += sum(len(output.new_token_ids) for output in outputs)
    elapsed = time.perf_counter() - start
    return {
        "output_tokens": num_tokens,
        "seconds": elapsed,
        "tokens_per_s": num_tokens / elapsed,
        "steps": len(step_times),
        "step_ms_mean": 1000 * statistics.mean(step_times),
        "step_ms_median": 1000 * statistics.median(step_times),
        "step_ms_max": 1000 * max(step_times),
    }


def checkpoint_parameters(model_dir: Path) -> int:
    """Parameters in the checkpoint (tied embeddings once): the runner repacks its weights."""
    with safe_open(model_dir / "model.safetensors", framework="pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())  # noqa: SIM118


def matmul_peak(dtype: torch.dtype) -> float:
    """FLOP/s of the best of a few matmuls at the model's decode-batch shapes, through torch's
    matmul or the engine's prepacked linear layer, whichever is faster for this dtype."""
    x = torch.randn(64 * 4, 512, dtype=dtype)
    linear = Linear(512, 1536 * 2).to(dtype)
    assert linear.weight is not None
    plain = linear.weight.normal_().T
    candidates = [lambda: x @ plain]
    if can_pack(dtype):
        packed = Linear(512, 1536 * 2).to(dtype)
        packed.load_state_dict(linear.state_dict())
        packed.pack(batch_size=len(x))
        candidates.append(lambda: packed(x))
    best = min(_best_seconds(candidate) for candidate in candidates)
    return 2 * x.shape[0] * x.shape[1] * plain.shape[1] / best


def _best_seconds(run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(30):
        start = time.perf_counter()
        for _ in range(10):
            run()
        best = min(best, (time.perf_counter() - start) / 10)
    return best


def build_bench_engine(
    model_dir: Path, dtype: str, backend: str, engine_cache: Path
) -> BuiltEngine:
    """The benchmark's engine as `serve` builds it (64 sequences, a 2048-token step, 256 MiB
    of KV cache), its backend prepared from (or built into) `engine_cache`."""
    config = RuntimeConfig(
        model=model_dir,
        served_model_name="bench",
        dtype=DTYPE_NAMES[dtype],
        backend=backend,
        engine_cache=engine_cache,
        max_num_seqs=NUM_PROMPTS,
        max_batch_tokens=2048,
        kv_cache_memory=256 << 20,
    )
    return build_engine(config, ModelInfo.read(model_dir))


def bench_dtype(
    model_dir: Path, prompts: list[list[int]], name: str, rounds: int, backend: str = "eager"
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"engine-{backend}-") as cache:
        engine = build_bench_engine(model_dir, name, backend, Path(cache)).engine
    assert isinstance(engine.runner, PagedModelRunner), "the benchmark model is a Qwen2"
    num_params = checkpoint_parameters(model_dir)
    timed_run(engine, prompts[:8], concurrent=True)  # warm-up
    offline = [timed_run(engine, prompts, concurrent=True) for _ in range(rounds)]
    single = timed_run(engine, prompts[:4], concurrent=False)
    best = max(run["tokens_per_s"] for run in offline)
    peak = matmul_peak(DTYPES[name])
    return {
        "offline": offline,
        "offline_tokens_per_s": best,
        "single_request": single,
        "parameters": num_params,
        "matmul_peak_gflops": peak / 1e9,
        "fraction_of_matmul_peak": best * 2 * num_params / peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backend", choices=["eager", "compile"], default="eager")
    parser.add_argument("--model-dir", type=Path, default=RESULTS / "qwen2-40m")
    parser.add_argument(
        "--architecture",
        choices=["qwen2", "deepseek-v3"],
        default="qwen2",
        help="deepseek-v3: the engine against the transformers fallback and generate",
    )
    args = parser.parse_args()
    model_dir = build_model(args.model_dir)
    prompts = make_prompts(model_dir)
    if args.architecture == "deepseek-v3":
        from deepseek_v3_throughput import bench_v3

        v3 = {name: bench_v3(model_dir, prompts, name) for name in args.dtypes}
        path = RESULTS / f"deepseek_v3_throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps({"torch": torch.__version__, **v3}, indent=2))
        for name, figures in v3.items():
            print(
                f"{name}: engine {figures['engine']['batch']['tokens_per_s']:.0f} tok/s at batch "
                f"{len(prompts)}, {figures['engine_vs_fallback_batch']:.1f}x the fallback, "
                f"{figures['engine_vs_transformers_batch']:.1f}x transformers generate; one at a "
                f"time {figures['engine_vs_transformers_one_at_a_time']:.1f}x generate"
            )
        print(f"wrote {path}")
        return
    result: dict[str, Any] = {
        "workload": {"prompts": len(prompts), "prompt_tokens": sum(map(len, prompts))},
        "machine": {"cpu": platform.processor(), "torch_threads": torch.get_num_threads()},
        "torch": torch.__version__,
        "backend": args.backend,
    }
    for name in args.dtypes:
        result[name] = bench_dtype(model_dir, prompts, name, args.rounds, args.backend)
        print(
            f"{name}: {result[name]['offline_tokens_per_s']:.0f} tok/s offline, "
            f"{result[name]['single_request']['tokens_per_s']:.0f} tok/s one request at a time"
        )
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    path = RESULTS / f"engine_throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
