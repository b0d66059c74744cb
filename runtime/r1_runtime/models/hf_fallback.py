"""Any architecture transformers can load (the full R1's `DeepseekV3ForCausalLM`, with MLA and
MoE, among others) inside the same scheduler, by recompute.

NOTE: slower but correct. It keeps no KV cache: every time a sequence is sampled, the model
runs over all of its tokens and the last position's logits are used; prefill chunks that do
not reach the end cost nothing. A step's cost grows with the length of the sequences, so this
is for architectures our own paged decoder does not cover yet, not for serving at speed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel


class HFFallbackModel:
    """A transformers causal LM answering "logits after these tokens" for a batch."""

    def __init__(self, model_dir: str | Path, *, dtype: torch.dtype, device: torch.device):
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        torch.nn.Module.to(model, device)  # NOTE: transformers' own `to` is untyped
        self.model = model  # from_pretrained returns it in eval mode
        self.device = device

    @torch.inference_mode()
    def last_token_logits(self, token_ids: list[list[int]]) -> torch.Tensor:
        """`[len(token_ids), vocab]` fp32 logits at the last token of each sequence."""
        lengths = torch.tensor([len(ids) for ids in token_ids], device=self.device)
        # NOTE: right padding needs no attention mask: causal attention never lets a real token
        # see the padding after it, and positions of real tokens stay 0..n-1.
        input_ids = torch.zeros(len(token_ids), int(lengths.max()), dtype=torch.long)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids)
        logits = self.model(input_ids=input_ids.to(self.device), use_cache=False).logits
        rows = torch.arange(len(token_ids), device=self.device)
        last: torch.Tensor = logits[rows, lengths - 1].float()
        return last
