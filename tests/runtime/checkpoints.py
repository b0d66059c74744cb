"""Tiny random checkpoints written by transformers itself (fp32, fixed seeds), and the
reference outputs of its `generate`, for comparing the engine against.

Everything is small enough to build in well under a second; a session fixture builds each
checkpoint once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from r1_runtime.build import build_engine
from r1_runtime.config import RuntimeConfig
from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.model_info import ModelInfo
from transformers import (
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

transformers.utils.logging.disable_progress_bar()

VOCAB_SIZE = 256
EOS = VOCAB_SIZE - 1
# NOTE: a wider initialisation than transformers' 0.02 gives peaked, varied logits: greedy
# comparisons then do not hinge on near-ties, and outputs do not collapse to one token.
COMMON: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "initializer_range": 0.2,
    "eos_token_id": EOS,
    "bos_token_id": 1,
}


def qwen2_config() -> Qwen2Config:
    """Qwen2: q/k/v biases, GQA, untied embeddings."""
    return Qwen2Config(**COMMON, rope_theta=10000.0, tie_word_embeddings=False)


def llama_config() -> LlamaConfig:
    """Llama 3.1-style: llama3 rope scaling (short original context, so scaling matters at
    the tested positions), tied embeddings."""
    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    return LlamaConfig(**COMMON, rope_parameters=rope, tie_word_embeddings=True)


def deepseek_v3_config() -> DeepseekV3Config:
    """The full R1 architecture in miniature: MLA (low-rank q and kv), YaRN (with different
    mscales, so both of its factors matter), and MoE after one dense layer: 8 experts in 2
    groups, the best group kept, 2 experts per token, plus a shared one."""
    yarn = {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 128,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 0.707,
    }
    return DeepseekV3Config(
        **{**COMMON, "num_key_value_heads": 4},
        rope_parameters=yarn,
        q_lora_rank=32,
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        head_dim=8,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        moe_intermediate_size=32,
        first_k_dense_replace=1,
        n_group=2,
        topk_group=1,
    )


ENGINE_DEFAULTS: dict[str, Any] = {
    "dtype": "float32",
    "block_size": 4,
    "num_kv_blocks": 256,
    "max_batch_tokens": 64,
    "max_num_seqs": 8,
}

MODELS: dict[str, tuple[type[PreTrainedModel], Any]] = {
    "qwen2": (Qwen2ForCausalLM, qwen2_config),
    "llama": (LlamaForCausalLM, llama_config),
    "deepseek_v3": (DeepseekV3ForCausalLM, deepseek_v3_config),
}


def build_model(name: str, seed: int = 0) -> PreTrainedModel:
    model_class, make_config = MODELS[name]
    config: PretrainedConfig = make_config()
    torch.manual_seed(seed)
    return model_class(config).eval()


def write_checkpoint(name: str, directory: Path, *, max_shard_size: str | None = None) -> Path:
    """Save the tiny model `name` under `directory/name` (sharded if `max_shard_size`)."""
    path = directory / name
    model = build_model(name)
    if max_shard_size is None:
        model.save_pretrained(path)
    else:
        model.save_pretrained(path, max_shard_size=max_shard_size)
    return path


@torch.inference_mode()
def reference_greedy(model: PreTrainedModel, prompt: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy `generate` for one prompt, EOS ignored."""
    output = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    return list(output[0, len(prompt) :].tolist())


def make_prompts(
    lengths: list[int], *, seed: int = 1, prefix: list[int] | None = None
) -> list[list[int]]:
    """Random prompts of the given lengths (after the shared `prefix`, if any)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (prefix or []) + torch.randint(2, EOS, (length,), generator=generator).tolist()
        for length in lengths
    ]


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory holding every tiny checkpoint of `MODELS`, one sub-directory each."""
    directory = tmp_path_factory.mktemp("checkpoints")
    for name in MODELS:
        write_checkpoint(name, directory)
    yield directory


def make_engine(path: Path, **overrides: Any) -> LLMEngine:
    """An fp32 engine with small blocks and a fixed block count, unless overridden (any
    `RuntimeConfig` field; `dtype` also as a torch dtype), built as `serve` builds it."""
    knobs = {**ENGINE_DEFAULTS, **overrides}
    if isinstance(knobs["dtype"], torch.dtype):
        knobs["dtype"] = str(knobs["dtype"]).removeprefix("torch.")
    config = RuntimeConfig(model=path, served_model_name=path.name, **knobs)
    return build_engine(config, ModelInfo.read(path)).engine
