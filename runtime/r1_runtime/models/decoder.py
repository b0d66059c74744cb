"""Our own Llama-family decoder (Llama, Qwen2: the DeepSeek-R1 distills) over the paged cache.

The model works on a flattened batch: `[num_tokens]` ids and positions from any mix of
sequences, decodes first. q, k and v are one fused projection, as are gate and up.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from r1_runtime.models import native
from r1_runtime.models.attention import AttentionMetadata, LayerAttention, paged_attention
from r1_runtime.models.config import DecoderConfig
from r1_runtime.models.layers import (
    Embedding,
    Linear,
    RMSNorm,
    RotaryEmbedding,
    apply_rotary,
    silu_and_mul,
)

Rope = tuple[torch.Tensor, torch.Tensor]  # cos and signed sin of the step's positions


class Attention(nn.Module):
    def __init__(self, config: DecoderConfig, layer_index: int) -> None:
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

    def forward(
        self,
        x: torch.Tensor,
        rope: Rope,
        layer_cache: torch.Tensor,
        attention: LayerAttention | None,
        residual: torch.Tensor,
    ) -> torch.Tensor:
        """`residual` plus the attention's output. `attention` None: traced by torch.compile,
        within `step_attention`."""
        qkv = self.qkv_proj(x)
        qk = apply_rotary(qkv[:, : self.qk_size].view(len(x), -1, self.head_dim), *rope)
        q, k = qk[:, : self.num_heads], qk[:, self.num_heads :]
        v = qkv[:, self.qk_size :].view(len(x), self.num_kv_heads, self.head_dim)
        if attention is None:
            op = torch.ops.r1_native if native.use_native(q) else torch.ops.r1
            out = op.paged_attention(q, k, v, self.layer_index)
        else:
            out = paged_attention(q, k, v, layer_cache, attention)
        result: torch.Tensor = self.o_proj(out.flatten(1), residual)
        return result


class MLP(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        size, bias = config.intermediate_size, config.mlp_bias
        self.gate_up_proj = Linear(config.hidden_size, 2 * size, bias=bias)
        self.down_proj = Linear(size, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """`residual` plus the MLP's output."""
        out: torch.Tensor = self.down_proj(silu_and_mul(self.gate_up_proj(x)), residual)
        return out


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig, layer_index: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer_index)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        rope: Rope,
        layer_cache: torch.Tensor,
        attention: LayerAttention | None,
    ) -> torch.Tensor:
        x = self.self_attn(self.input_layernorm(x), rope, layer_cache, attention, residual=x)
        out: torch.Tensor = self.mlp(self.post_attention_layernorm(x), residual=x)
        return out


class DecoderModel(nn.Module):
    """`model.*` of the checkpoint: embeddings, layers, final norm."""

    def __init__(self, config: DecoderConfig, max_positions: int) -> None:
        super().__init__()
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(
            config.head_dim, max_positions, config.rope_theta, config.rope_scaling
        )


class DecoderForCausalLM(nn.Module):
    """Llama or Qwen2 with Hugging Face parameter names, q/k/v and gate/up fused.

    `forward` returns the last hidden states before the final norm for every token;
    `compute_logits` turns the few rows that are sampled into fp32 logits.
    """

    # checkpoint name -> (our parameter name, shard): the loader fuses these at load time
    packed_modules: ClassVar[dict[str, tuple[str, str | int]]] = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, config: DecoderConfig, max_positions: int) -> None:
        super().__init__()
        self.config = config
        self.model = DecoderModel(config, max_positions)
        self.lm_head = Linear(config.hidden_size, config.vocab_size)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the embedding with the output projection when the config says so (again after
        `to_empty`, which unties parameters)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def pack_linear_weights(self, batch_size: int) -> None:
        """Move every linear layer's weight into oneDNN's layout (`Linear.pack`); the embedding
        keeps its own copy. For CPU inference only: the model cannot be loaded into again."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.pack(batch_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """`kv_cache` is `[num_layers, 2, num_blocks, block_size, kv_heads, head_dim]`. Traced by
        torch.compile, `meta` is not read: run it within `step_attention`."""
        x: torch.Tensor = self.model.embed_tokens(input_ids)
        rope = self.model.rotary_emb(positions)
        attention = None
        if not torch.compiler.is_compiling():
            attention = LayerAttention.for_model(meta, self.config.num_queries_per_kv, x.dtype)
        for layer, layer_cache in zip(self.model.layers, kv_cache, strict=True):
            x = layer(x, rope, layer_cache, attention)
        return x

    def sampled_logits(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        sample_indices: torch.Tensor,
    ) -> torch.Tensor:
        """One engine step: `forward`, then the fp32 logits of the `sample_indices` rows."""
        hidden = self(input_ids, positions, kv_cache, meta)
        return self.compute_logits(hidden[sample_indices])

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.lm_head(self.model.norm(hidden))
        return logits.float()

    def shard_offset(self, param_name: str, shard: str | int) -> tuple[int, int]:
        """(first row, number of rows) of a fused parameter that one checkpoint tensor fills."""
        config = self.config
        if "qkv_proj" in param_name:
            q_size = config.num_heads * config.head_dim
            kv_size = config.num_kv_heads * config.head_dim
            return {"q": (0, q_size), "k": (q_size, kv_size), "v": (q_size + kv_size, kv_size)}[
                str(shard)
            ]
        size = config.intermediate_size
        return int(shard) * size, size
