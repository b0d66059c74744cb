"""What sizing needs from a Hugging Face config.json: parameter counts and KV cache layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# Bytes per quantized weight. AWQ/GPTQ: 4 bits plus an fp16 scale and a 4-bit zero point per
# group of 128 weights (0.5 + 2.5/128). fp8/int8 scales (per channel or per 128x128 block) are
# negligible. Embeddings and the output head stay in the model dtype, as vLLM loads them.
QUANT_BYTES = {"fp8": 1.0, "int8": 1.0, "awq": 0.52, "gptq": 0.52}


class ModelConfigError(ValueError):
    """A config.json the planner cannot size; the message names the key."""


def _int(config: dict[str, Any], key: str) -> int:
    if key not in config:
        raise ModelConfigError(f"config.json has no {key!r}, which the capacity planner needs")
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelConfigError(f"config.json {key!r} must be a positive integer: {value!r}")
    return value


@dataclass(frozen=True)
class ModelShape:
    """What sizing needs from a config.json: parameter counts and the KV cache layout."""

    name: str
    num_layers: int
    num_kv_heads: int
    """KV heads the cache splits into across tensor ranks; 1 for MLA's shared latent."""
    kv_elements_per_layer: int
    """Elements cached per token and layer: 2 x KV heads x head dim, or MLA's latent."""
    num_params: int
    num_active_params: int
    """Used per token: all but the unchosen routed experts and the input embedding (a lookup),
    as DeepSeek counts R1's 37B activated."""
    num_embedding_params: int
    """Input embedding plus an untied output head: kept in the model dtype when quantized."""
    torch_dtype: str
    native_quantization: str | None
    max_position_embeddings: int

    @classmethod
    def from_config(cls, config: dict[str, Any], name: str | None = None) -> ModelShape:
        """Size a decoder (Llama/Qwen2-like, or DeepSeek-V2/V3 with MLA and MoE) from its
        config.json; raises ModelConfigError naming a missing key."""
        hidden, layers = _int(config, "hidden_size"), _int(config, "num_hidden_layers")
        heads, vocab = _int(config, "num_attention_heads"), _int(config, "vocab_size")
        if "kv_lora_rank" in config:
            kv_heads = 1
            kv_elements = _int(config, "kv_lora_rank") + _int(config, "qk_rope_head_dim")
        else:
            kv_heads = config.get("num_key_value_heads") or heads
            kv_elements = 2 * kv_heads * (config.get("head_dim") or hidden // heads)
        mlp_total, mlp_active = _mlp_params(config, hidden, layers)
        embed = vocab * hidden
        head = 0 if config.get("tie_word_embeddings", False) else embed
        common = layers * (_attention_params(config, hidden, heads) + 2 * hidden) + hidden
        dtype = config.get("torch_dtype") or config.get("dtype") or "bfloat16"
        if dtype not in DTYPE_BYTES:
            raise ModelConfigError(f"config.json 'torch_dtype' {dtype!r} is not in {DTYPE_BYTES}")
        method = (config.get("quantization_config") or {}).get("quant_method")
        return cls(
            name=name or config.get("_name_or_path") or "model",
            num_layers=layers,
            num_kv_heads=kv_heads,
            kv_elements_per_layer=kv_elements,
            num_params=embed + head + common + mlp_total,
            num_active_params=head + common + mlp_active,
            num_embedding_params=embed + head,
            torch_dtype=dtype,
            native_quantization=method if method in QUANT_BYTES else None,
            max_position_embeddings=_int(config, "max_position_embeddings"),
        )

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV cache bytes per token over all layers. GQA: 2 x layers x KV heads x head dim;
        MLA: layers x (kv_lora_rank + qk_rope_head_dim), the compressed latent vLLM caches."""
        return self.num_layers * self.kv_elements_per_layer * dtype_bytes


def _attention_params(config: dict[str, Any], hidden: int, heads: int) -> int:
    if "kv_lora_rank" in config:
        nope, rope = _int(config, "qk_nope_head_dim"), _int(config, "qk_rope_head_dim")
        v_dim, kv_rank = _int(config, "v_head_dim"), _int(config, "kv_lora_rank")
        q_out, q_rank = heads * (nope + rope), config.get("q_lora_rank")
        q = hidden * q_rank + q_rank + q_rank * q_out if q_rank else hidden * q_out
        kv = hidden * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + v_dim)
        return q + kv + heads * v_dim * hidden
    head_dim = config.get("head_dim") or hidden // heads
    q, kv = heads * head_dim, (config.get("num_key_value_heads") or heads) * head_dim
    has_bias = config.get("attention_bias", config.get("model_type") == "qwen2")
    return hidden * (q + 2 * kv) + q * hidden + (q + 2 * kv if has_bias else 0)


def _mlp_params(config: dict[str, Any], hidden: int, layers: int) -> tuple[int, int]:
    """Gated MLP parameters over all layers: (total, active per token)."""
    dense = 3 * hidden * _int(config, "intermediate_size")
    experts = config.get("n_routed_experts") or 0
    if not experts:
        return layers * dense, layers * dense
    first, every = config.get("first_k_dense_replace", 0), config.get("moe_layer_freq", 1)
    num_moe = sum(1 for i in range(first, layers) if i % every == 0)
    expert = 3 * hidden * _int(config, "moe_intermediate_size")
    router = experts * hidden + (experts if config.get("topk_method") == "noaux_tc" else 0)
    shared = config.get("n_shared_experts", 0) * expert + router
    dense_part = (layers - num_moe) * dense
    total = dense_part + num_moe * (experts * expert + shared)
    active = dense_part + num_moe * (_int(config, "num_experts_per_tok") * expert + shared)
    return total, active


def weight_bytes(shape: ModelShape, dtype: str, quantization: str | None) -> int:
    """Bytes of weights for a resolved dtype (bfloat16/float16/float32) and quantization."""
    if quantization is None:
        return shape.num_params * DTYPE_BYTES[dtype]
    quantized = (shape.num_params - shape.num_embedding_params) * QUANT_BYTES[quantization]
    return shape.num_embedding_params * DTYPE_BYTES[dtype] + round(quantized)
