"""DeepSeek-V3 / R1 (`DeepseekV3ForCausalLM`) over the paged KV cache, with Hugging Face
parameter names: the published checkpoint's per-expert tensors are stacked at load time, and
each rank reads only the heads, MLP columns and experts it owns (`deepseek_v3_layers`)."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import torch

from r1_runtime.layout import ParallelLayout
from r1_runtime.models.base import Shard, packed_target
from r1_runtime.models.decoder_stack import DecoderStackLM, StageModules
from r1_runtime.models.deepseek_v3_config import DeepseekV3Config
from r1_runtime.models.deepseek_v3_layers import DecoderLayer, MoE, PairRotary
from r1_runtime.models.kernels.attention import AttentionMetadata, LayerAttention
from r1_runtime.models.layers import Linear, padded_vocab_size
from r1_runtime.models.parallel import ModelShard, TensorSlice

EXPERT = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.")


class DeepseekV3ForCausalLM(DecoderStackLM):
    packed_modules: ClassVar[dict[str, tuple[str, Shard]]] = {
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }
    fp32_parameters: ClassVar[tuple[str, ...]] = (
        "gate.weight",
        "gate.e_score_correction_bias",
        "_scale_inv",  # fp8 block scales (--precision fp8)
    )
    uses_flash_attention: ClassVar[bool] = False  # no flash kernel for a 576-wide latent head

    def __init__(
        self, config: DeepseekV3Config, max_positions: int, shard: ModelShard | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.shard = shard = shard or ModelShard()
        self.layer_range = shard.stage_layers(config.num_layers)
        self.num_heads = shard.split(config.num_heads, "num_attention_heads")
        self.model = StageModules(
            config,
            shard,
            lambda index, cache_index: DecoderLayer(config, index, cache_index, shard),
            PairRotary(config, max_positions),
        )
        rows = padded_vocab_size(config.vocab_size, shard) // shard.tp_size
        self.lm_head = Linear(config.hidden_size, rows) if shard.is_last_stage else None

    @classmethod
    def config_from(cls, raw: dict[str, Any]) -> DeepseekV3Config:
        return DeepseekV3Config.from_dict(raw)

    @classmethod
    def parallel_problem(cls, config: DeepseekV3Config, layout: ParallelLayout) -> str | None:
        return config.parallel_problem(layout)

    def kv_cache_shape(self, num_blocks: int, block_size: int) -> tuple[int, ...]:
        """`[layers, num_blocks, block_size, kv_lora_rank + qk_rope_head_dim]`: one latent per
        token and layer (the same on every tensor-parallel rank)."""
        return (len(self.layer_range), num_blocks, block_size, self.config.latent_dim)

    def step(self, kv_cache: torch.Tensor, meta: AttentionMetadata) -> AbstractContextManager[None]:
        attention = LayerAttention.for_model(meta, self.num_heads, kv_cache.dtype)
        return self.kernels.step(kv_cache, attention)

    # --- loading -------------------------------------------------------------------------

    def checkpoint_target(self, name: str) -> tuple[str, Shard | None] | None:
        """Per-expert tensors go to this rank's stacked experts (None: another rank's); the
        MTP layers after the last decoder layer are not held (see `held_parameter`)."""
        held = self.held_parameter(name)
        if held is None:
            return None
        expert = EXPERT.match(held)
        if expert is None:
            return packed_target(held, self.packed_modules)
        prefix, index, part = expert.group(1), int(expert.group(2)), expert.group(3)
        local = index - self._experts(prefix).first_expert
        if not 0 <= local < self._experts(prefix).num_local:
            return None
        if part == "down_proj":
            return f"{prefix}.down_proj", local
        return f"{prefix}.gate_up_proj", (local, 0 if part == "gate_proj" else 1)

    def keeps_as_is(self, name: str) -> bool:
        """The multi-token-prediction layers after the last decoder layer (R1's layer 61),
        on the last pipeline stage: kept for speculative decoding, which does not run them
        yet; of their routed experts, only this rank's."""
        if not name.startswith("model.layers.") or not self.shard.is_last_stage:
            return False
        if int(name.split(".")[2]) < self.config.num_layers:
            return False
        expert = EXPERT.match(name)
        if expert is None:
            return True
        per_rank = self.config.num_experts // self.shard.tp_size
        return bool(int(expert.group(2)) // per_rank == self.shard.tp_rank)

    def shard_view(self, param_name: str, param: torch.Tensor, shard: Shard) -> torch.Tensor:
        if isinstance(shard, tuple):  # an expert's gate or up rows
            expert, part = shard
            size = self.config.moe_intermediate_size
            return param[expert, part * size : (part + 1) * size]
        if ".mlp.experts." in param_name:
            return param[int(shard)]
        size = param.shape[0] // 2  # a dense or shared MLP's fused gate and up
        return param[int(shard) * size : (int(shard) + 1) * size]

    def expected_shards(self, names: list[str]) -> set[tuple[str, Shard | None]]:
        expected = super().expected_shards(names)
        for name in names:
            if name.endswith(".mlp.experts.gate_up_proj"):
                experts = range(self._experts(name.rsplit(".", 1)[0]).num_local)
                expected -= {(name, 0), (name, 1), (name, None)}
                expected |= {(name, (e, part)) for e in experts for part in (0, 1)}
            elif name.endswith(".mlp.experts.down_proj"):
                experts = range(self._experts(name.rsplit(".", 1)[0]).num_local)
                expected -= {(name, None)}
                expected |= {(name, e) for e in experts}
        # NOTE: fp8 block scales are filled with their weight
        return {(name, shard) for name, shard in expected if not name.endswith("_scale_inv")}

    def checkpoint_slice(self, param_name: str, shard: Shard | None) -> TensorSlice | None:
        """The rows or columns of a checkpoint tensor this tensor-parallel rank reads."""
        tp, rank, config = self.shard.tp_size, self.shard.tp_rank, self.config
        if tp == 1 or ".mlp.experts." in param_name:  # routed experts: whole, on their rank
            return None
        heads = self.num_heads
        if param_name.endswith(("q_b_proj.weight", "q_proj.weight")):
            return TensorSlice(0, rank * heads * config.qk_head_dim, heads * config.qk_head_dim)
        if param_name.endswith("kv_b_proj.weight"):
            per_head = config.qk_nope_head_dim + config.v_head_dim
            return TensorSlice(0, rank * heads * per_head, heads * per_head)
        if param_name.endswith("o_proj.weight"):
            return TensorSlice(1, rank * heads * config.v_head_dim, heads * config.v_head_dim)
        if param_name.endswith(("gate_up_proj.weight", "down_proj.weight")):
            width = self._mlp_width(param_name) // tp
            return TensorSlice(0 if "gate_up" in param_name else 1, rank * width, width)
        if param_name in ("model.embed_tokens.weight", "lm_head.weight"):
            rows = padded_vocab_size(config.vocab_size, self.shard) // tp
            return TensorSlice(0, rank * rows, rows)
        return None

    def _mlp_width(self, param_name: str) -> int:
        config = self.config
        if "shared_experts" in param_name:
            return int(config.moe_intermediate_size * config.n_shared_experts)
        return int(config.intermediate_size)

    def _experts(self, prefix: str) -> Any:
        """The `Experts` module at `model.layers.N.mlp.experts`."""
        moe = self.model.layers[int(prefix.split(".")[2])].mlp
        assert isinstance(moe, MoE)
        return moe.experts
