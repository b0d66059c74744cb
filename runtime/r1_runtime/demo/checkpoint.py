"""The demo checkpoints: a tiny Qwen2 (the R1-Distill-Qwen architecture) and a tiny
DeepseekV3 (MLA + MoE, the full R1 architecture), with seeded random weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    DeepseekV3Config,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
)

CONTEXT_LENGTH = 4096
ROPE = {"rope_type": "default", "rope_theta": 10000.0}


def qwen2_config(vocab_size: int, bos_token_id: int, eos_token_id: int) -> Qwen2Config:
    """About 25M parameters: the engine benchmark's shapes (issue 4) with the demo vocabulary."""
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT_LENGTH,
        rope_parameters=dict(ROPE),
        tie_word_embeddings=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        dtype="bfloat16",
    )


def deepseek_v3_config(vocab_size: int, bos_token_id: int, eos_token_id: int) -> DeepseekV3Config:
    """Three layers, the first dense; eight routed experts in four groups, two groups and two
    experts chosen per token, one shared expert; low-rank query and compressed KV (MLA)."""
    return DeepseekV3Config(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        moe_intermediate_size=128,
        num_hidden_layers=3,
        first_k_dense_replace=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        q_lora_rank=64,
        kv_lora_rank=32,
        qk_rope_head_dim=16,
        qk_nope_head_dim=32,
        v_head_dim=32,
        num_mtp_layers=0,  # no multi-token-prediction weights are written
        max_position_embeddings=CONTEXT_LENGTH,
        rope_parameters=dict(ROPE),
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        dtype="bfloat16",
    )


CONFIGS: dict[str, Callable[[int, int, int], PretrainedConfig]] = {
    "qwen2": qwen2_config,
    "deepseek_v3": deepseek_v3_config,
}


def save_checkpoint(directory: Path, config: PretrainedConfig, seed: int) -> int:
    """Write config.json, generation_config.json and model.safetensors (bf16); return the
    number of parameters. The global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
        _randomize_biases_and_norms(model)
    model.to(torch.bfloat16)
    model.generation_config = _generation_config(config)
    model.save_pretrained(directory, safe_serialization=True)
    return int(model.num_parameters())


def _randomize_biases_and_norms(model: PreTrainedModel) -> None:
    # transformers initialises biases to 0 and norm scales to 1, which would hide an engine
    # that forgets to apply them; the state dict also covers buffers such as DeepseekV3's
    # router score-correction bias.
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("bias"):
                tensor.normal_(0.0, 0.02)
            elif "norm" in name:
                tensor.normal_(1.0, 0.1)


def _generation_config(config: PretrainedConfig) -> GenerationConfig:
    # DeepSeek-R1's own defaults: sampling at temperature 0.6, top-p 0.95.
    return GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
    )
