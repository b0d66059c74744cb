"""What our decoder-only models share: `model.embed_tokens`, `model.layers` (of which this
pipeline stage runs `layer_range`), `model.norm`, `model.rotary_emb` and `lm_head`, with
Hugging Face's names; the embedding on the first stage, the norm and output head on the last.
Each architecture adds its layers, its cache layout and how its tensors are split."""

from __future__ import annotations

from typing import Any

import torch

from r1_runtime.models.base import PagedCausalLM
from r1_runtime.models.layers import Linear


class DecoderStackLM(PagedCausalLM):
    model: Any  # embed_tokens (first stage), layers, norm (last stage), rotary_emb
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
