"""Our Llama-family model (Llama, Qwen2: the DeepSeek-R1 distills) over the paged KV cache.

The model works on a flattened batch: `[num_tokens]` ids and positions from any mix of
sequences, decodes first. q, k and v are one fused projection, as are gate and up.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any, ClassVar, cast

import torch
from torch import nn

from r1_runtime.models.base import PagedCausalLM, Shard
from r1_runtime.models.kernels.attention import AttentionMetadata, LayerAttention
from r1_runtime.models.layers import (
    Embedding,
    KernelModule,
    Linear,
    RMSNorm,
    RotaryEmbedding,
    apply_rotary,
    silu_and_mul,
)
from r1_runtime.models.llama_config import LlamaConfig

Rope = tuple[torch.Tensor, torch.Tensor]  # cos and signed sin of the step's positions


class Attention(KernelModule):
    def __init__(self, config: LlamaConfig, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        q_size = config.num_heads * config.head_dim
        kv_size = config.num_kv_heads * config.head_dim
        self.qk_size = q_size + kv_size
        self.qkv_proj = Linear(config.hidden_size, q_size + 2 * kv_size, bias=config.qkv_bias)
        self.o_proj = Linear(q_size, config.hidden_size, bias=config.o_bias)

    def forward(self, x: torch.Tensor, rope: Rope, residual: torch.Tensor) -> torch.Tensor:
        """`residual` plus the attention's output; writes this layer's keys and values."""
        qkv = self.qkv_proj(x)
        qk = apply_rotary(qkv[:, : self.qk_size].view(len(x), -1, self.head_dim), *rope)
        q, k = qk[:, : self.num_heads], qk[:, self.num_heads :]
        v = qkv[:, self.qk_size :].view(len(x), self.num_kv_heads, self.head_dim)
        out = self.kernels.paged_attention(q, k, v, self.layer_index)
        result: torch.Tensor = self.o_proj(out.flatten(1), residual)
        return result


class MLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        size, bias = config.intermediate_size, config.mlp_bias
        self.gate_up_proj = Linear(config.hidden_size, 2 * size, bias=bias)
        self.down_proj = Linear(size, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """`residual` plus the MLP's output."""
        out: torch.Tensor = self.down_proj(silu_and_mul(self.gate_up_proj(x)), residual)
        return out


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer_index: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer_index)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        x = self.self_attn(self.input_layernorm(x), rope, residual=x)
        out: torch.Tensor = self.mlp(self.post_attention_layernorm(x), residual=x)
        return out


class LlamaModel(nn.Module):
    """`model.*` of the checkpoint: embeddings, layers, final norm."""

    def __init__(self, config: LlamaConfig, max_positions: int) -> None:
        super().__init__()
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(
            config.head_dim, max_positions, config.rope_theta, config.rope_scaling
        )


class LlamaForCausalLM(PagedCausalLM):
    """Llama or Qwen2 with Hugging Face parameter names, q/k/v and gate/up fused.

    `forward` returns the last hidden states before the final norm for every token;
    `compute_logits` turns the few rows that are sampled into fp32 logits.
    """

    packed_modules: ClassVar[dict[str, tuple[str, Shard]]] = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, config: LlamaConfig, max_positions: int) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, max_positions)
        self.lm_head = Linear(config.hidden_size, config.vocab_size)
        self.tie_weights()

    @classmethod
    def config_from(cls, raw: dict[str, Any]) -> LlamaConfig:
        return LlamaConfig.from_dict(raw)

    def tie_weights(self) -> None:
        """Share the embedding with the output projection when the config says so (again after
        `to_empty`, which unties parameters)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def reset_buffers(self) -> None:
        self.tie_weights()
        self.model.rotary_emb.reset_tables()

    def kv_cache_shape(self, num_blocks: int, block_size: int) -> tuple[int, ...]:
        """`[num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]`: keys, values."""
        config = self.config
        return (config.num_layers, 2, num_blocks, block_size, config.num_kv_heads, config.head_dim)

    def step(self, kv_cache: torch.Tensor, meta: AttentionMetadata) -> AbstractContextManager[None]:
        attention = LayerAttention.for_model(meta, self.config.num_queries_per_kv, kv_cache.dtype)
        return self.kernels.step(kv_cache, attention)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x: torch.Tensor = self.model.embed_tokens(input_ids)
        rope = self.model.rotary_emb(positions)
        for layer in self.model.layers:
            x = layer(x, rope)
        return x

    def sampled_logits(
        self, input_ids: torch.Tensor, positions: torch.Tensor, sample_indices: torch.Tensor
    ) -> torch.Tensor:
        hidden = self(input_ids, positions)
        return self.compute_logits(hidden[sample_indices])

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.lm_head(self.model.norm(hidden))
        return logits.float()

    def shard_offset(self, param_name: str, shard: Shard) -> tuple[int, int]:
        config = self.config
        if "qkv_proj" in param_name:
            q_size = config.num_heads * config.head_dim
            kv_size = config.num_kv_heads * config.head_dim
            return {"q": (0, q_size), "k": (q_size, kv_size), "v": (q_size + kv_size, kv_size)}[
                str(shard)
            ]
        size = config.intermediate_size
        return int(shard) * size, size

    def native_decoder(self) -> Any | None:
        """`r1_native.Decoder` over this model's packed weights (the native kernels must be
        loaded): a decode step in one call; None when the weights are not packed."""
        if self.lm_head.packed_weight is None:
            return None
        config, inner = self.config, self.model
        weights: list[torch.Tensor | None] = []
        biases: list[torch.Tensor | None] = []
        for layer in cast("Iterable[DecoderLayer]", inner.layers):
            attention, mlp = layer.self_attn, layer.mlp
            linears = (attention.qkv_proj, attention.o_proj, mlp.gate_up_proj, mlp.down_proj)
            packed = [linear.packed_weight for linear in linears]
            weights += [layer.input_layernorm.weight, packed[0], packed[1]]
            weights += [layer.post_attention_layernorm.weight, packed[2], packed[3]]
            biases += [linear.bias for linear in linears]
        return torch.classes.r1_native.Decoder(
            inner.embed_tokens.weight,
            weights,
            biases,
            inner.norm.weight,
            self.lm_head.packed_weight,
            inner.rotary_emb.cos,
            inner.rotary_emb.sin,
            config.num_heads,
            config.num_kv_heads,
            config.head_dim,
            config.rms_norm_eps,
        )
