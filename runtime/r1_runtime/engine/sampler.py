"""Pick each sampled sequence's next token from its logits: greedy, or temperature, top-k and
top-p sampling, reproducible per request when it has a seed. Batched over rows; no Python loop
over the vocabulary."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from r1_runtime.engine.sequence import SamplingParams, Sequence
from r1_runtime.models.kernels.ops import argmax as python_argmax


class Sampler:
    """Stateless but for the random generators of seeded requests.

    A seeded request draws only from its own `torch.Generator`, one draw of noise per sampled
    token, so its tokens do not depend on the other requests in the batch. The generator lives
    as long as the `Sequence` does (a weak mapping: nothing to release).
    """

    def __init__(self, argmax: Callable[[torch.Tensor], torch.Tensor] = python_argmax) -> None:
        self.argmax = argmax  # the greedy pick: the kernel the backend chose
        self._generators: weakref.WeakKeyDictionary[Sequence, torch.Generator] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """`logits` `[len(seqs), vocab]` (any float dtype; sampling is in fp32) -> token ids."""
        logits = logits.float()
        params = [seq.params for seq in seqs]
        greedy = self.argmax(logits)
        if all(p.temperature == 0 for p in params):
            return greedy
        is_greedy = torch.tensor([p.temperature == 0 for p in params], device=logits.device)
        temperatures = torch.tensor(
            [p.temperature or 1.0 for p in params], device=logits.device
        ).unsqueeze(1)
        logits = _top_k_top_p(logits / temperatures, params)
        probs = logits.softmax(dim=-1)
        # NOTE: argmax(p / E) with E ~ Exp(1) i.i.d. picks token i with probability p_i
        # (the exponential race), so each row needs only its own noise.
        sampled = (probs / self._exponential_noise(probs, seqs)).argmax(dim=-1)
        return torch.where(is_greedy, greedy, sampled)

    def _exponential_noise(self, probs: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        noise = torch.empty_like(probs).exponential_()
        for row, seq in enumerate(seqs):
            if seq.params.seed is not None and seq.params.temperature > 0:
                noise[row].exponential_(generator=self._generator(seq, probs.device))
        return noise

    def _generator(self, seq: Sequence, device: torch.device) -> torch.Generator:
        generator = self._generators.get(seq)
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(seq.params.seed or 0)
            self._generators[seq] = generator
        return generator


def _top_k_top_p(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Set to -inf every logit outside the row's top k, then outside the smallest set whose
    probability reaches top p (always keeping the most likely token)."""
    vocab_size = logits.shape[-1]
    if all(p.top_k is None and p.top_p == 1.0 for p in params):
        return logits
    device = logits.device
    top_k = torch.tensor([min(p.top_k or vocab_size, vocab_size) for p in params], device=device)
    top_p = torch.tensor([p.top_p if p.top_p < 1.0 else 2.0 for p in params], device=device)
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(vocab_size, device=device)
    sorted_logits.masked_fill_(ranks >= top_k.unsqueeze(1), float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    sorted_logits.masked_fill_(mass_before >= top_p.unsqueeze(1), float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)
