"""The Python kernels: linear layers over oneDNN-packed weights, paged attention reading the
running step, the greedy argmax; and the same linear and attention calls registered as the
opaque ops `r1::packed_linear` and `r1::paged_attention` for torch.compile to trace.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from r1_runtime.models.kernels.attention import LayerAttention, latent_attention, paged_attention

ARGMAX_CHUNK = 256  # vocabulary sizes are multiples of it in practice; any size is still exact


def can_pack(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs linear layers of this dtype on this CPU."""
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    return dtype == torch.float32 or (
        dtype == torch.bfloat16 and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


def pack_linear_weight(weight: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A copy of `weight` in oneDNN's blocked layout, chosen for inputs of about `batch_size`
    rows (CPU only, a dtype `can_pack` accepts)."""
    packed: torch.Tensor = torch.ops.mkldnn._reorder_linear_weight(weight, batch_size)
    return packed


# NOTE: torch's own fp32 linear goes through MKL, which runs its slow generic code on AMD CPUs
# (oneDNN with a prepacked weight is over twice as fast there); bf16 single rows gain as much.
# These are the ops inductor's weight prepacking emits:
# https://github.com/pytorch/pytorch/blob/v2.6.0/torch/_inductor/fx_passes/mkldnn_fusion.py
def packed_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    out_features: int,
) -> torch.Tensor:
    """`x W^T + b` (plus `residual`) for a weight from `pack_linear_weight`."""
    if residual is None:
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    else:
        out = torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
    return out


@dataclass(frozen=True)
class StepAttention:
    """What the attention kernels read during one step: the KV cache and the step's
    `LayerAttention`.

    NOTE: attention reads these from the running step rather than from its arguments (vLLM's
    forward context does the same): traced by torch.compile as one opaque op per layer, the
    graph then depends on the number of tokens only, not on the shapes of block tables and
    masks, and the cache is written in place by the op, never copied by functionalization.
    """

    kv_cache: torch.Tensor  # [num_layers, 2, num_blocks, block_size, kv_heads, head_dim]
    attention: LayerAttention


_STEP_ATTENTION: contextvars.ContextVar[StepAttention] = contextvars.ContextVar("step_attention")


@contextlib.contextmanager
def step_attention(kv_cache: torch.Tensor, attention: LayerAttention) -> Iterator[None]:
    """Run a step within this: its attention kernels read `kv_cache` and `attention`."""
    token = _STEP_ATTENTION.set(StepAttention(kv_cache, attention))
    try:
        yield
    finally:
        _STEP_ATTENTION.reset(token)


def step_paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int
) -> torch.Tensor:
    """`paged_attention` of layer `layer` in the running step (`step_attention`)."""
    step = _STEP_ATTENTION.get()
    return paged_attention(q, k, v, step.kv_cache[layer], step.attention)


def step_latent_attention(
    q: torch.Tensor, latent: torch.Tensor, layer: int, value_dim: int, scale: float
) -> torch.Tensor:
    """`latent_attention` of layer `layer` in the running step (`step_attention`)."""
    step = _STEP_ATTENTION.get()
    return latent_attention(q, latent, step.kv_cache[layer], step.attention, value_dim, scale)


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """`logits.argmax(dim=-1)` of `[rows, vocab]`, the first index among equal maxima.

    NOTE: torch's argmax along a row is not vectorised on CPU while its amax is: the max of
    each chunk of the row, the first chunk holding the row's max, then argmax within that
    chunk alone.
    """
    rows, vocab = logits.shape
    chunk = math.gcd(vocab, ARGMAX_CHUNK)
    chunks = logits.view(rows, vocab // chunk, chunk)
    best = chunks.amax(dim=-1).argmax(dim=-1)
    within = chunks[torch.arange(rows, device=logits.device), best].argmax(dim=-1)
    return best * chunk + within


def linear_shape(
    x: torch.Tensor, weight: Any, bias: Any, residual: Any, out_features: int
) -> torch.Tensor:
    """The output of `packed_linear` without computing it (torch.compile's fake tensors)."""
    return x.new_empty(*x.shape[:-1], out_features)


def attention_shape(q: torch.Tensor, k: Any, v: Any, layer: int) -> torch.Tensor:
    """The output of `step_paged_attention` without computing it."""
    return torch.empty_like(q, memory_format=torch.contiguous_format)


def latent_attention_shape(
    q: torch.Tensor, latent: Any, layer: int, value_dim: int, scale: float
) -> torch.Tensor:
    """The output of `step_latent_attention` without computing it."""
    return q.new_empty(q.shape[0], q.shape[1], value_dim)


# The traceable forms: each call is one node of the graph (inductor's lowering of the raw
# mkldnn ops wants its own packing; attention reads the step, see `StepAttention`).
_LIBRARY: Any = torch.library.Library("r1", "FRAGMENT")  # type: ignore[no-untyped-call]
_LIBRARY.define(
    "packed_linear(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, SymInt out_features)"
    " -> Tensor"
)
_LIBRARY.define("paged_attention(Tensor q, Tensor k, Tensor v, int layer) -> Tensor")
_LIBRARY.define(
    "latent_attention(Tensor q, Tensor latent, int layer, int value_dim, float scale) -> Tensor"
)
_LIBRARY.impl("packed_linear", packed_linear, "CPU")
_LIBRARY.impl("packed_linear", packed_linear, "MkldnnCPU")  # bf16 packed weights
_LIBRARY.impl("paged_attention", step_paged_attention, "CPU")
_LIBRARY.impl("paged_attention", step_paged_attention, "CUDA")
_LIBRARY.impl("latent_attention", step_latent_attention, "CPU")
_LIBRARY.impl("latent_attention", step_latent_attention, "CUDA")
torch.library.register_fake("r1::packed_linear", linear_shape, lib=_LIBRARY)
torch.library.register_fake("r1::paged_attention", attention_shape, lib=_LIBRARY)
torch.library.register_fake("r1::latent_attention", latent_attention_shape, lib=_LIBRARY)
