"""What our decoder-only models share: `model.embed_tokens`, `model.layers` (of which this
pipeline stage runs `layer_range`), `model.norm`, `model.rotary_emb` and `lm_head`, with
Hugging Face's names; the embedding on the first stage, the norm and output head on the last.
Each architecture adds its layers, its cache layout and how its tensors are split."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from r1_runtime.models.base import PagedCausalLM
from r1_runtime.models.layers import Linear, RMSNorm, VocabEmbedding
from r1_runtime.models.parallel import ModelShard


class StageModules(nn.Module):
    """`model.*` of the checkpoint: embeddings, layers, final norm, rotary tables; of a
    pipeline stage, its layers (the others are empty placeholders, so that parameter names
    keep the checkpoint's layer numbers), the embedding on the first stage and the norm on
    the last. `make_layer(index, cache_index)` builds decoder layer `index`, the
    `cache_index`-th of this stage's KV cache."""

    rotary_emb: Any  # the architecture's: reset_tables(), and positions -> its rotation

    def __init__(
        self,
        config: Any,  # vocab_size, hidden_size, rms_norm_eps, num_layers
        shard: ModelShard,
        make_layer: Callable[[int, int], nn.Module],
        rotary_emb: nn.Module,
    ) -> None:
        super().__init__()
        layers = shard.stage_layers(config.num_layers)
        self.embed_tokens = (
            VocabEmbedding(config.vocab_size, config.hidden_size, shard)
            if shard.is_first_stage
            else None
        )
        self.layers = nn.ModuleList(
            make_layer(i, i - layers.start) if i in layers else nn.Identity()
            for i in range(config.num_layers)
        )
        self.norm = (
            RMSNorm(config.hidden_size, config.rms_norm_eps) if shard.is_last_stage else None
        )
        self.rotary_emb = rotary_emb


class DecoderStackLM(PagedCausalLM):
    model: StageModules
    lm_head: Linear | None  # on the last stage
    layer_range: range  # the layers this stage runs

    def tie_weights(self) -> None:
        """Share the embedding with the output projection when the config says so (again after
        `to_empty`, which unties parameters)."""
        embed = self.model.embed_tokens
        if self.config.tie_word_embeddings and embed is not None and self.lm_head is not None:
            self.lm_head.weight = embed.weight

    def reset_buffers(self) -> None:
        self.tie_weights()
        self.model.rotary_emb.reset_tables()

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> torch.Tensor:
        """This stage's layers over the embedded ids (first stage) or `hidden`: their last
        hidden states, before the final norm, for every token."""
        embed = self.model.embed_tokens
        x = embed(input_ids) if embed is not None else hidden
        assert x is not None, "a stage after the first continues from the previous one's"
        rope = self.model.rotary_emb(positions)
        for index in self.layer_range:
            x = self.model.layers[index](x, rope)
        return x

    def stage_output(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        sample_indices: torch.Tensor,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        out: torch.Tensor = self(input_ids, positions, hidden)
        return self.compute_logits(out[sample_indices]) if self.lm_head is not None else out

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits over the whole vocabulary (gathered from the tensor-parallel ranks)."""
        assert self.model.norm is not None and self.lm_head is not None
        local: torch.Tensor = self.lm_head(self.model.norm(hidden))
        logits = self.shard.all_gather_columns(local)[:, : self.config.vocab_size]
        return logits.float()

    def held_parameter(self, name: str) -> str | None:
        """Layers of other stages are not held; the last stage's output projection reads a
        tied embedding from the embedding's name."""
        if name.startswith("model.layers."):
            return name if int(name.split(".")[2]) in self.layer_range else None
        if name.startswith("model.embed_tokens."):
            if self.shard.is_first_stage:
                return name
            tied = self.config.tie_word_embeddings and self.lm_head is not None
            return name.replace("model.embed_tokens.", "lm_head.") if tied else None
        if name.startswith(("model.norm.", "lm_head.")):
            return name if self.shard.is_last_stage else None
        return name
