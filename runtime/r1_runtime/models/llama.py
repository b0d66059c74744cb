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

from r1_runtime.layout import ParallelLayout
from r1_runtime.models.base import Shard
from r1_runtime.models.decoder_stack import DecoderStackLM, StageModules
from r1_runtime.models.kernels.attention import AttentionMetadata, LayerAttention
from r1_runtime.models.layers import (
    KernelModule,
    Linear,
    RMSNorm,
    RotaryEmbedding,
    RowParallelLinear,
    apply_rotary,
    padded_vocab_size,
    silu_and_mul,
)
from r1_runtime.models.llama_config import LlamaConfig
from r1_runtime.models.parallel import ModelShard, TensorSlice, kv_head_range

Rope = tuple[torch.Tensor, torch.Tensor]  # cos and signed sin of the step's positions


class Attention(KernelModule):
    """This rank's query heads and the KV heads they read (`kv_head_range`); `cache_index`
    is the layer's place in this rank's KV cache."""

    def __init__(self, config: LlamaConfig, cache_index: int, shard: ModelShard) -> None:
        super().__init__()
        self.layer_index = cache_index
        self.num_heads = shard.split(config.num_heads, "num_attention_heads")
        self.num_kv_heads = len(kv_head_range(config.num_kv_heads, shard))
        self.head_dim = config.head_dim
        q_size = self.num_heads * config.head_dim
        kv_size = self.num_kv_heads * config.head_dim
        self.qk_size = q_size + kv_size
        self.qkv_proj = Linear(config.hidden_size, q_size + 2 * kv_size, bias=config.qkv_bias)
        self.o_proj = RowParallelLinear(
            config.num_heads * config.head_dim, config.hidden_size, shard, bias=config.o_bias
        )

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
    def __init__(self, config: LlamaConfig, shard: ModelShard) -> None:
        super().__init__()
        size, bias = config.intermediate_size, config.mlp_bias
        local_size = shard.split(size, "intermediate_size")
        self.gate_up_proj = Linear(config.hidden_size, 2 * local_size, bias=bias)
        self.down_proj = RowParallelLinear(size, config.hidden_size, shard, bias=bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """`residual` plus the MLP's output."""
        out: torch.Tensor = self.down_proj(silu_and_mul(self.gate_up_proj(x)), residual)
        return out


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, cache_index: int, shard: ModelShard) -> None:
        super().__init__()
        self.self_attn = Attention(config, cache_index, shard)
        self.mlp = MLP(config, shard)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        x = self.self_attn(self.input_layernorm(x), rope, residual=x)
        out: torch.Tensor = self.mlp(self.post_attention_layernorm(x), residual=x)
        return out


class LlamaForCausalLM(DecoderStackLM):
    """Llama or Qwen2 with Hugging Face parameter names, q/k/v and gate/up fused; the part
    `shard` names of it (`models.parallel`).

    `forward` runs this stage's layers and returns their last hidden states, before the final
    norm, for every token; `compute_logits` turns the few rows that are sampled into fp32
    logits over the whole vocabulary.
    """

    packed_modules: ClassVar[dict[str, tuple[str, Shard]]] = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(
        self, config: LlamaConfig, max_positions: int, shard: ModelShard | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.shard = shard = shard or ModelShard()
        self.layer_range = shard.stage_layers(config.num_layers)
        self.num_kv_heads = len(kv_head_range(config.num_kv_heads, shard))
        self.num_heads = shard.split(config.num_heads, "num_attention_heads")
        rotary = RotaryEmbedding(
            config.head_dim, max_positions, config.rope_theta, config.rope_scaling
        )
        self.model = StageModules(
            config, shard, lambda _, cache_index: DecoderLayer(config, cache_index, shard), rotary
        )
        self.lm_head = (
            Linear(config.hidden_size, padded_vocab_size(config.vocab_size, shard) // shard.tp_size)
            if shard.is_last_stage
            else None
        )
        self.tie_weights()

    @classmethod
    def config_from(cls, raw: dict[str, Any]) -> LlamaConfig:
        return LlamaConfig.from_dict(raw)

    @classmethod
    def parallel_problem(cls, config: LlamaConfig, layout: ParallelLayout) -> str | None:
        return config.parallel_problem(layout)

    def kv_cache_shape(self, num_blocks: int, block_size: int) -> tuple[int, ...]:
        """`[layers, 2, num_blocks, block_size, kv_heads, head_dim]` of this rank: keys, values."""
        layers, head_dim = len(self.layer_range), self.config.head_dim
        return (layers, 2, num_blocks, block_size, self.num_kv_heads, head_dim)

    def step(self, kv_cache: torch.Tensor, meta: AttentionMetadata) -> AbstractContextManager[None]:
        queries_per_kv = self.num_heads // self.num_kv_heads
        attention = LayerAttention.for_model(meta, queries_per_kv, kv_cache.dtype)
        return self.kernels.step(kv_cache, attention)

    def shard_view(self, param_name: str, param: torch.Tensor, shard: Shard) -> torch.Tensor:
        config = self.config
        if "qkv_proj" in param_name:
            q_size = self.num_heads * config.head_dim
            kv_size = self.num_kv_heads * config.head_dim
            start, size = {
                "q": (0, q_size),
                "k": (q_size, kv_size),
                "v": (q_size + kv_size, kv_size),
            }[str(shard)]
        else:
            assert isinstance(shard, int)
            size = config.intermediate_size // self.shard.tp_size
            start = shard * size
        return param[start : start + size]

    def checkpoint_slice(self, param_name: str, shard: Shard | None) -> TensorSlice | None:
        """The part of a checkpoint tensor this tensor-parallel rank reads; None: all of it."""
        rank, config = self.shard.tp_rank, self.config
        if self.shard.tp_size == 1:
            return None
        head_dim = config.head_dim
        if "qkv_proj" in param_name:
            if shard == "q":
                return TensorSlice(0, rank * self.num_heads * head_dim, self.num_heads * head_dim)
            first_kv = kv_head_range(config.num_kv_heads, self.shard).start
            return TensorSlice(0, first_kv * head_dim, self.num_kv_heads * head_dim)
        local_mlp = config.intermediate_size // self.shard.tp_size
        if "gate_up_proj" in param_name:
            return TensorSlice(0, rank * local_mlp, local_mlp)
        if param_name.endswith("o_proj.weight"):
            return TensorSlice(1, rank * self.num_heads * head_dim, self.num_heads * head_dim)
        if param_name.endswith("down_proj.weight"):
            return TensorSlice(1, rank * local_mlp, local_mlp)
        if param_name in ("model.embed_tokens.weight", "lm_head.weight"):
            rows = padded_vocab_size(config.vocab_size, self.shard) // self.shard.tp_size
            return TensorSlice(0, rank * rows, rows)
        return None

    def native_decoder(self) -> Any | None:
        """`r1_native.Decoder` over this model's packed weights (the native kernels must be
        loaded): a decode step in one call; None when the weights are not packed or the model
        is split over ranks."""
        if self.shard != ModelShard() or self.lm_head is None or self.lm_head.packed_weight is None:
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
        assert inner.embed_tokens is not None and inner.norm is not None
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
