"""The shape of a Llama-family decoder (Llama, Qwen2) as read from a checkpoint's config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The architectures our own decoder implements, each with its attention-bias convention.
OWN_ARCHITECTURES = frozenset({"LlamaForCausalLM", "Qwen2ForCausalLM"})
ROPE_TYPES = frozenset({"default", "llama3"})


class UnsupportedConfigError(ValueError):
    """The checkpoint is not one our own decoder can run (the transformers fallback may)."""


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1 frequency scaling (`rope_type: llama3`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """Everything the decoder needs; Qwen2 is Llama with a bias on q, k and v."""

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

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DecoderConfig:
        """Read a Hugging Face config; raise `UnsupportedConfigError` for what we do not run."""
        architecture = architecture_of(raw)
        if architecture not in OWN_ARCHITECTURES:
            raise UnsupportedConfigError(f"architecture {architecture!r} is not implemented here")
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


def read_config(model_dir: str | Path) -> dict[str, Any]:
    with open(Path(model_dir) / "config.json") as f:
        raw: dict[str, Any] = json.load(f)
    return raw


def architecture_of(raw: dict[str, Any]) -> str:
    architectures = raw.get("architectures") or []
    if len(architectures) != 1:
        raise UnsupportedConfigError(f"expected one entry in 'architectures': {architectures}")
    return str(architectures[0])


def token_ids(value: int | list[int] | None) -> frozenset[int]:
    """An `eos_token_id` field (an int, a list or null) as a set."""
    if value is None:
        return frozenset()
    return frozenset([value] if isinstance(value, int) else value)


def eos_token_ids(model_dir: str | Path) -> frozenset[int]:
    """EOS ids from config.json and generation_config.json together."""
    ids = token_ids(read_config(model_dir).get("eos_token_id"))
    generation = Path(model_dir) / "generation_config.json"
    if generation.exists():
        with open(generation) as f:
            ids |= token_ids(json.load(f).get("eos_token_id"))
    return ids


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
