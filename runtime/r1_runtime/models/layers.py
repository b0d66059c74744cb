"""Building blocks of our models: linear and embedding layers, RMSNorm, rotary embeddings.

Parameters are never initialised: the loader builds the model on the meta device, allocates
it empty on the target device and overwrites every parameter from the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from r1_runtime.models.fp8 import Block, dequantize_blocks, scale_shape
from r1_runtime.models.kernels import PYTHON, Kernels
from r1_runtime.models.kernels.ops import pack_linear_weight
from r1_runtime.models.parallel import ModelShard


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1 frequency scaling (`rope_type: llama3`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


class KernelModule(nn.Module):
    """A module that calls kernels: `PagedCausalLM.use_kernels` hands it the chosen set."""

    kernels: Kernels = PYTHON


class Linear(KernelModule):
    """`y = x W^T + b`, plus `residual` when given; the weight is `[out_features, in_features]`
    as in the checkpoint, until `pack` replaces it. With `fp8_block`, the weight stays in fp8
    with its block scales (`weight_scale_inv`), dequantized for each call."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = False,
        fp8_block: Block | None = None,
    ) -> None:
        super().__init__()
        dtype = torch.float8_e4m3fn if fp8_block else None
        self.weight: nn.Parameter | None = nn.Parameter(
            torch.empty(out_features, in_features, dtype=dtype), requires_grad=False
        )
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None
        self.packed_weight: torch.Tensor | None = None
        self.fp8_block = fp8_block
        self.weight_scale_inv = (
            nn.Parameter(
                torch.empty(scale_shape(out_features, in_features, fp8_block)),
                requires_grad=False,
            )
            if fp8_block
            else None
        )

    def pack(self, batch_size: int) -> None:
        """Replace the weight by a copy in oneDNN's blocked layout (`pack_linear_weight`); an
        fp8 weight stays as it is."""
        if self.fp8_block is not None:
            return
        assert self.weight is not None
        self.packed_weight = pack_linear_weight(self.weight, batch_size)
        self.weight = None  # NOTE: freed, unless another module shares it (tied embeddings)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.apply_weight(x, self.bias, residual)

    def apply_weight(
        self, x: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None
    ) -> torch.Tensor:
        if self.packed_weight is not None:
            weight = self.packed_weight
            return self.kernels.packed_linear(x, weight, bias, residual, weight.shape[0])
        assert self.weight is not None
        weight = self.weight
        if self.fp8_block is not None:
            assert self.weight_scale_inv is not None
            weight = dequantize_blocks(weight, self.weight_scale_inv, self.fp8_block, x.dtype)
        out = F.linear(x, weight, bias)
        return out if residual is None else out.add_(residual)


class RowParallelLinear(Linear):
    """A linear layer whose input features are split over the tensor-parallel ranks: each
    computes its partial product, the first adds bias and residual, and one all-reduce sums
    them. The whole layer when the model is not split."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        shard: ModelShard,
        *,
        bias: bool = False,
        fp8_block: Block | None = None,
    ) -> None:
        local = shard.split(in_features, "in_features")
        super().__init__(local, out_features, bias=bias, fp8_block=fp8_block)
        self.shard = shard

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.shard.tp_rank != 0:
            return self.shard.all_reduce(self.apply_weight(x, None, None))
        return self.shard.all_reduce(self.apply_weight(x, self.bias, residual))


def padded_vocab_size(vocab_size: int, shard: ModelShard) -> int:
    """The vocabulary rounded up to a multiple of the tensor-parallel size."""
    return -(-vocab_size // shard.tp_size) * shard.tp_size


class VocabEmbedding(nn.Module):
    """The token embedding, its rows (the vocabulary, padded) split over the tensor-parallel
    ranks: each looks up the ids in its rows, zeros elsewhere, and an all-reduce sums them."""

    def __init__(self, vocab_size: int, embedding_dim: int, shard: ModelShard) -> None:
        super().__init__()
        self.shard = shard
        rows = padded_vocab_size(vocab_size, shard) // shard.tp_size
        self.first_row = shard.tp_rank * rows
        self.weight = nn.Parameter(torch.empty(rows, embedding_dim), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.shard.tp_size == 1:
            return F.embedding(ids, self.weight)
        local = ids - self.first_row
        outside = (local < 0) | (local >= self.weight.shape[0])
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        return self.shard.all_reduce(out.masked_fill_(outside.unsqueeze(-1), 0))


class RMSNorm(nn.Module):
    """Normalise in fp32, cast back, then scale: the order Hugging Face uses, so bf16 results
    round the same way."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden_size), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up for the fused `[gate | up]` projection."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> torch.Tensor:
    """RoPE inverse frequencies in fp32, with Llama 3.1 scaling when given (as transformers'
    `_compute_llama3_parameters`)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
    inv_freq = 1.0 / theta**exponents
    if scaling is None:
        return inv_freq
    old_len = scaling.original_max_position_embeddings
    low_freq_wavelen = old_len / scaling.low_freq_factor
    high_freq_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Rotates queries and keys by position (the rotate-half layout of Hugging Face Llama).
    cos and sin are tabled for positions below `max_positions`, computed in fp32 and stored in
    the module's dtype (Hugging Face casts them to the activations' dtype the same way)."""

    def __init__(
        self, head_dim: int, max_positions: int, theta: float, scaling: RopeScaling | None
    ) -> None:
        super().__init__()
        self.inv_freq = inverse_frequencies(head_dim, theta, scaling)
        self.cos: torch.Tensor
        self.sin: torch.Tensor  # NOTE: [-sin | sin]: rotate_half's sign folded in
        self.register_buffer("cos", torch.empty(max_positions, head_dim), persistent=False)
        self.register_buffer("sin", torch.empty(max_positions, head_dim), persistent=False)

    def reset_tables(self) -> None:
        """Fill the tables; call after the module has its final device and dtype."""
        positions = torch.arange(self.cos.shape[0], dtype=torch.float32, device="cpu")
        freqs = positions[:, None] * self.inv_freq[None, :]
        self.cos.copy_(torch.cat((freqs, freqs), dim=-1).cos())
        self.sin.copy_(torch.cat((-freqs.sin(), freqs.sin()), dim=-1))

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin `[tokens, 1, head_dim]` for `apply_rotary`, once per step."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`x` `[tokens, heads, head_dim]` rotated: Hugging Face's `x * cos + rotate_half(x) * sin`
    with the same products, as `rotate_half(x) * sin == [x2 | x1] * [-sin | sin]`."""
    half = x.shape[-1] // 2
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)
    return torch.addcmul(x * cos, swapped, sin)
