"""The shape of a Llama-family model (Llama, Qwen2) as read from a checkpoint's config.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r1_runtime.layout import ParallelLayout
from r1_runtime.models.base import UnsupportedConfigError
from r1_runtime.models.layers import RopeScaling

ROPE_TYPES = frozenset({"default", "llama3"})


@dataclass(frozen=True, kw_only=True)
class LlamaConfig:
    """Everything the Llama-family model needs; Qwen2 is Llama with a bias on q, k and v."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False

    @property
    def num_queries_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    def parallel_problem(self, layout: ParallelLayout) -> str | None:
        """Why the model cannot be split as `layout` says (`PagedCausalLM.parallel_problem`)."""
        tp = layout.tensor_parallel_size
        fix = f"choose a --tensor-parallel-size that divides it, not {tp}"
        if self.num_heads % tp:
            return f"--tensor-parallel-size does not divide the {self.num_heads} heads: {fix}"
        if self.intermediate_size % tp:
            return (
                f"--tensor-parallel-size does not divide intermediate_size "
                f"{self.intermediate_size}: {fix}"
            )
        kv = self.num_kv_heads
        if kv % tp and tp % kv:
            return (
                f"--tensor-parallel-size {tp} neither divides the {kv} KV heads nor is a "
                f"multiple of them: choose one that is"
            )
        return layout.stages_problem(self.num_layers)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LlamaConfig:
        """Read a Hugging Face config of one of the `architectures` the model registry maps to
        Llama; raise `UnsupportedConfigError` for variants we do not run."""
        architecture = str(raw["architectures"][0])
        if raw.get("use_sliding_window") or raw.get("hidden_act", "silu") != "silu":
            raise UnsupportedConfigError("no sliding-window attention or non-SiLU MLP here")
        num_heads = raw["num_attention_heads"]
        is_qwen2 = architecture == "Qwen2ForCausalLM"
        attention_bias = bool(raw.get("attention_bias", False))
        theta, scaling = _rope(raw)
        return cls(
            architecture=architecture,
            vocab_size=raw["vocab_size"],
            hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            num_layers=raw["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=raw.get("num_key_value_heads") or num_heads,
            head_dim=raw.get("head_dim") or raw["hidden_size"] // num_heads,
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=raw.get("max_position_embeddings", 4096),
            qkv_bias=is_qwen2 or attention_bias,
            o_bias=not is_qwen2 and attention_bias,
            mlp_bias=bool(raw.get("mlp_bias", False)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        )


def _rope(raw: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """(theta, scaling) from transformers 5's `rope_parameters` or the older `rope_theta` plus
    `rope_scaling` that published checkpoints carry."""
    params = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise UnsupportedConfigError(f"rope type {rope_type!r} is not implemented here")
    if rope_type == "default":
        return theta, None
    scaling = RopeScaling(
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]),
    )
    return theta, scaling
