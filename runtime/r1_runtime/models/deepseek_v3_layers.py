"""The layers of DeepSeek-V3 / R1 (`models.deepseek_v3`).

Attention is multi-head latent attention in its absorbed form: the cache holds one latent
per token and layer (`kv_lora_rank` values, then the `qk_rope_head_dim` rotated key), the
queries are folded through the key up-projection so that every head attends over the latents
directly, and the value up-projection is applied after attention. After the first dense
layers, the MLP is a mixture of experts (`models.moe`) plus a shared expert.

Tensor parallelism splits the heads (the latent cache is replicated: every rank holds every
token's latent), the dense and shared MLPs as in Llama, and gives each rank `1/T` of the
routed experts; each attention and each MLP block ends in one all-reduce.
"""

from __future__ import annotations

import torch
from torch import nn

from r1_runtime.models.deepseek_v3_config import DeepseekV3Config
from r1_runtime.models.fp8 import Block, dequantize_blocks, scale_shape
from r1_runtime.models.layers import (
    KernelModule,
    Linear,
    RMSNorm,
    RowParallelLinear,
    silu_and_mul,
)
from r1_runtime.models.moe import Experts, Routing, route
from r1_runtime.models.parallel import ModelShard

Rope = tuple[torch.Tensor, torch.Tensor]  # cos and sin of each rotated pair, [tokens, 1, rope/2]


class PairRotary(nn.Module):
    """cos and sin per position and rotated pair, YaRN-scaled when the config says so, in
    the model's dtype (transformers casts them to the activations' dtype the same way)."""

    def __init__(self, config: DeepseekV3Config, max_positions: int) -> None:
        super().__init__()
        self.config = config
        half = config.qk_rope_head_dim // 2
        self.cos: torch.Tensor
        self.sin: torch.Tensor
        self.register_buffer("cos", torch.empty(max_positions, half), persistent=False)
        self.register_buffer("sin", torch.empty(max_positions, half), persistent=False)

    def reset_tables(self) -> None:
        config, dim = self.config, self.config.qk_rope_head_dim
        yarn = config.yarn
        if yarn is None:
            exponents = torch.arange(0, dim, 2, dtype=torch.float32) / dim
            inv_freq, factor = 1.0 / config.rope_theta**exponents, 1.0
        else:
            inv_freq, factor = (
                yarn.inverse_frequencies(dim, config.rope_theta),
                yarn.cos_sin_factor(),
            )
        positions = torch.arange(self.cos.shape[0], dtype=torch.float32)
        angles = positions[:, None] * inv_freq[None, :]
        self.cos.copy_(angles.cos() * factor)
        self.sin.copy_(angles.sin() * factor)

    def forward(self, positions: torch.Tensor) -> Rope:
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def rotate(x: torch.Tensor, rope: Rope, interleave: bool) -> torch.Tensor:
    """`x` `[tokens, heads, rope_dim]` rotated pair by pair: pairs are `(x0, x1), (x2, x3)...`
    when `interleave`, else the two halves; the result lays the pairs out as halves (for q
    and k alike, so their products are those of transformers)."""
    cos, sin = rope
    if interleave:
        first, second = x[..., 0::2], x[..., 1::2]
    else:
        first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)


class LatentAttention(KernelModule):
    def __init__(self, config: DeepseekV3Config, cache_index: int, shard: ModelShard) -> None:
        super().__init__()
        self.config = config
        self.layer_index = cache_index
        self.num_heads = shard.split(config.num_heads, "num_attention_heads")
        hidden, heads, fp8 = config.hidden_size, self.num_heads, config.weight_block
        bias = config.attention_bias
        if config.q_lora_rank is None:
            self.q_proj = Linear(hidden, heads * config.qk_head_dim, fp8_block=fp8)
        else:
            self.q_a_proj = Linear(hidden, config.q_lora_rank, bias=bias, fp8_block=fp8)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, config.rms_norm_eps)
            self.q_b_proj = Linear(config.q_lora_rank, heads * config.qk_head_dim, fp8_block=fp8)
        self.kv_a_proj_with_mqa = Linear(hidden, config.latent_dim, bias=bias, fp8_block=fp8)
        self.kv_a_layernorm = RMSNorm(config.kv_lora_rank, config.rms_norm_eps)
        # NOTE: a plain parameter, not a Linear: it is used split, per head, on both sides
        # of attention (never packed)
        per_head = config.qk_nope_head_dim + config.v_head_dim
        self.kv_b_proj = _Weight(heads * per_head, config.kv_lora_rank, fp8)
        self.o_proj = RowParallelLinear(
            config.num_heads * config.v_head_dim, hidden, shard, bias=bias, fp8_block=fp8
        )
        yarn = config.yarn
        self.scale = config.qk_head_dim**-0.5 * (yarn.softmax_factor() if yarn else 1.0)

    def forward(self, x: torch.Tensor, rope: Rope, residual: torch.Tensor) -> torch.Tensor:
        config, tokens = self.config, len(x)
        if config.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(tokens, self.num_heads, config.qk_head_dim)
        q_nope, q_rope = torch.split(q, [config.qk_nope_head_dim, config.qk_rope_head_dim], dim=-1)
        compressed = self.kv_a_proj_with_mqa(x)
        latent, k_rope = torch.split(
            compressed, [config.kv_lora_rank, config.qk_rope_head_dim], dim=-1
        )
        k_rope = rotate(k_rope.unsqueeze(1), rope, config.rope_interleave).squeeze(1)
        q_rope = rotate(q_rope, rope, config.rope_interleave)
        up = self.kv_b_proj.value(x.dtype).view(self.num_heads, -1, config.kv_lora_rank)
        up_k, up_v = torch.split(up, [config.qk_nope_head_dim, config.v_head_dim], dim=1)
        q_latent = torch.einsum("thn,hnc->thc", q_nope, up_k)  # the absorbed key projection
        queries = torch.cat((q_latent, q_rope), dim=-1)
        keys = torch.cat((self.kv_a_layernorm(latent), k_rope), dim=-1)
        out = self.kernels.latent_attention(
            queries, keys, self.layer_index, config.kv_lora_rank, self.scale
        )
        values = torch.einsum("thc,hvc->thv", out, up_v)  # the value up-projection, after
        result: torch.Tensor = self.o_proj(values.flatten(1), residual)
        return result


class _Weight(nn.Module):
    """A weight matrix (with its fp8 block scales when `fp8_block`)."""

    def __init__(self, rows: int, cols: int, fp8_block: Block | None) -> None:
        super().__init__()
        dtype = torch.float8_e4m3fn if fp8_block else None
        self.weight = nn.Parameter(torch.empty(rows, cols, dtype=dtype), requires_grad=False)
        self.fp8_block = fp8_block
        if fp8_block:
            scales = torch.empty(scale_shape(rows, cols, fp8_block))
            self.weight_scale_inv = nn.Parameter(scales, requires_grad=False)

    def value(self, dtype: torch.dtype) -> torch.Tensor:
        if self.fp8_block is None:
            return self.weight
        return dequantize_blocks(self.weight, self.weight_scale_inv, self.fp8_block, dtype)


class GatedMLP(nn.Module):
    """SiLU-gated MLP, `1/T` of its width on this rank. `reduce`: its own all-reduce closes
    it (a dense layer); else the MoE block's does."""

    def __init__(
        self, hidden: int, size: int, shard: ModelShard, fp8: Block | None, *, reduce: bool
    ) -> None:
        super().__init__()
        local = shard.split(size, "the MLP width")
        self.gate_up_proj = Linear(hidden, 2 * local, fp8_block=fp8)
        self.down_proj = (
            RowParallelLinear(size, hidden, shard, fp8_block=fp8)
            if reduce
            else Linear(local, hidden, fp8_block=fp8)
        )

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(silu_and_mul(self.gate_up_proj(x)), residual)
        return out


class Router(nn.Module):
    """The gate: expert logits in fp32 from the hidden states, and the choice bias."""

    def __init__(self, config: DeepseekV3Config) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.empty(config.num_experts, config.hidden_size), requires_grad=False
        )
        self.e_score_correction_bias = (
            nn.Parameter(torch.empty(config.num_experts), requires_grad=False)
            if config.has_correction_bias
            else None
        )


class MoE(nn.Module):
    def __init__(self, config: DeepseekV3Config, shard: ModelShard) -> None:
        super().__init__()
        self.shard = shard
        self.routing = Routing(
            top_k=config.num_experts_per_tok,
            n_group=config.n_group,
            topk_group=config.topk_group,
            norm_topk_prob=config.norm_topk_prob,
            routed_scaling_factor=config.routed_scaling_factor,
            scoring_func=config.scoring_func,
        )
        self.gate = Router(config)
        num_local = shard.split(config.num_experts, "n_routed_experts")
        hidden, fp8 = config.hidden_size, config.weight_block
        self.experts = Experts(
            num_local, shard.tp_rank * num_local, hidden, config.moe_intermediate_size, fp8
        )
        shared = config.moe_intermediate_size * config.n_shared_experts
        self.shared_experts = GatedMLP(hidden, shared, shard, fp8, reduce=False) if shared else None

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        logits = torch.nn.functional.linear(x.float(), self.gate.weight.float())
        weights, ids = route(logits, self.gate.e_score_correction_bias, self.routing)
        out = self.experts(x, weights, ids)
        if self.shared_experts is not None:
            out += self.shared_experts(x)
        if self.shard.tp_rank == 0:
            out += residual
        return self.shard.all_reduce(out)


class DecoderLayer(nn.Module):
    def __init__(
        self, config: DeepseekV3Config, index: int, cache_index: int, shard: ModelShard
    ) -> None:
        super().__init__()
        self.self_attn = LatentAttention(config, cache_index, shard)
        self.mlp: nn.Module = (
            MoE(config, shard)
            if config.is_moe_layer(index)
            else GatedMLP(
                config.hidden_size,
                config.intermediate_size,
                shard,
                config.weight_block,
                reduce=True,
            )
        )
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        x = self.self_attn(self.input_layernorm(x), rope, residual=x)
        out: torch.Tensor = self.mlp(self.post_attention_layernorm(x), residual=x)
        return out
