"""The shape of a DeepSeek-V3 / R1 model as read from its config.json: multi-head latent
attention, a mixture of experts after the first dense layers, YaRN rotary scaling, and the
fp8 block quantization of the published weights. Nothing of R1's sizes is assumed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r1_runtime.layout import ParallelLayout
from r1_runtime.models.base import UnsupportedConfigError
from r1_runtime.models.yarn import Yarn

TOPK_METHODS = frozenset({"noaux_tc", "greedy", "group_limited_greedy"})


@dataclass(frozen=True, kw_only=True)
class DeepseekV3Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int  # of the dense layers' MLP
    num_layers: int
    num_heads: int
    q_lora_rank: int | None  # None: q is one projection (V2-Lite); else low-rank
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    rms_norm_eps: float
    rope_theta: float
    yarn: Yarn | None
    rope_interleave: bool
    max_position_embeddings: int
    attention_bias: bool
    first_k_dense_replace: int
    moe_layer_freq: int
    num_experts: int
    num_experts_per_tok: int
    n_shared_experts: int
    moe_intermediate_size: int
    n_group: int
    topk_group: int
    norm_topk_prob: bool
    routed_scaling_factor: float
    scoring_func: str
    has_correction_bias: bool  # noaux_tc: e_score_correction_bias steers the choice only
    num_nextn_predict_layers: int  # MTP layers after the last decoder layer
    tie_word_embeddings: bool
    fp8_block: tuple[int, int] | None  # the checkpoint's fp8 weight block size
    keep_fp8: bool = False  # hold the fp8 weights as stored (--precision fp8)

    @property
    def weight_block(self) -> tuple[int, int] | None:
        """The fp8 block of the weights the model holds in fp8; None: dequantized at load."""
        return self.fp8_block if self.keep_fp8 else None

    @property
    def latent_dim(self) -> int:
        """Values the KV cache holds per token and layer: the latent, then the rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, index: int) -> bool:
        return (
            self.num_experts > 0
            and index >= self.first_k_dense_replace
            and index % self.moe_layer_freq == 0
        )

    def parallel_problem(self, layout: ParallelLayout) -> str | None:
        tp = layout.tensor_parallel_size
        for size, what in (
            (self.num_heads, "the attention heads"),
            (self.intermediate_size, "intermediate_size"),
            (self.num_experts, "the routed experts (each rank owns as many)"),
            (self.moe_intermediate_size * self.n_shared_experts, "the shared experts' width"),
        ):
            if size % tp:
                return (
                    f"--tensor-parallel-size {tp} does not divide {what} ({size}): choose a "
                    "size that does"
                )
        return layout.stages_problem(self.num_layers)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DeepseekV3Config:
        method = raw.get("topk_method", "noaux_tc")
        if method not in TOPK_METHODS:
            raise UnsupportedConfigError(f"topk_method {method!r} is not implemented here")
        scoring = raw.get("scoring_func", "sigmoid")
        if scoring not in ("sigmoid", "softmax") or raw.get("hidden_act", "silu") != "silu":
            raise UnsupportedConfigError(f"scoring_func {scoring!r} or a non-SiLU MLP")
        theta, yarn = _rope(raw)
        return cls(
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            num_layers=raw["num_hidden_layers"],
            num_heads=raw["num_attention_heads"],
            q_lora_rank=raw.get("q_lora_rank"),
            kv_lora_rank=raw["kv_lora_rank"],
            qk_nope_head_dim=raw["qk_nope_head_dim"],
            qk_rope_head_dim=raw["qk_rope_head_dim"],
            v_head_dim=raw["v_head_dim"],
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            rope_theta=theta,
            yarn=yarn,
            rope_interleave=bool(raw.get("rope_interleave", True)),
            max_position_embeddings=raw.get("max_position_embeddings", 4096),
            attention_bias=bool(raw.get("attention_bias", False)),
            first_k_dense_replace=raw.get("first_k_dense_replace", 0),
            moe_layer_freq=raw.get("moe_layer_freq", 1),
            num_experts=raw.get("n_routed_experts") or 0,
            num_experts_per_tok=raw.get("num_experts_per_tok") or 0,
            n_shared_experts=raw.get("n_shared_experts") or 0,
            moe_intermediate_size=raw.get("moe_intermediate_size", 0),
            n_group=raw.get("n_group") or 1,
            topk_group=raw.get("topk_group") or 1,
            norm_topk_prob=bool(raw.get("norm_topk_prob", True)),
            routed_scaling_factor=float(raw.get("routed_scaling_factor", 1.0)),
            scoring_func=scoring,
            has_correction_bias=method == "noaux_tc",
            num_nextn_predict_layers=raw.get("num_nextn_predict_layers", 0),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            fp8_block=_fp8_block(raw.get("quantization_config")),
        )


def _rope(raw: dict[str, Any]) -> tuple[float, Yarn | None]:
    """(theta, YaRN) from transformers 5's `rope_parameters` or the `rope_theta` plus
    `rope_scaling` that published checkpoints carry."""
    params = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type not in ("yarn", "deepseek_yarn"):
        raise UnsupportedConfigError(f"rope type {rope_type!r} is not implemented here")
    original = params["original_max_position_embeddings"]
    factor = params.get("factor") or raw["max_position_embeddings"] / original
    yarn = Yarn(
        factor=float(factor),
        original_max_position_embeddings=int(original),
        beta_fast=float(params.get("beta_fast") or 32),
        beta_slow=float(params.get("beta_slow") or 1),
        mscale=params.get("mscale"),
        mscale_all_dim=params.get("mscale_all_dim"),
        attention_factor=params.get("attention_factor"),
        truncate=bool(params.get("truncate", True)),
    )
    return theta, yarn


def _fp8_block(quantization: dict[str, Any] | None) -> tuple[int, int] | None:
    if not quantization:
        return None
    method = quantization.get("quant_method")
    if method != "fp8" or quantization.get("fmt", "e4m3") != "e4m3":
        raise UnsupportedConfigError(f"quantization {method!r} is not implemented here")
    rows, cols = quantization.get("weight_block_size") or (128, 128)
    return int(rows), int(cols)
