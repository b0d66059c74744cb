"""The kernels a model's layers call: attention over the paged KV cache, linear layers over
oneDNN-packed weights, and the sampler's greedy pick. One set is chosen when the model is
prepared for a backend (`r1_runtime.engine.backends`) and handed to the layers; no layer
asks at run time which one it is running:

- `PYTHON`: plain PyTorch calls (the eager backend);
- `TRACEABLE`: the same calls behind the opaque ops `r1::*`, which torch.compile traces as one
  graph node each (the compile backend where the C++ ops are not built, and tensorrt);
- `native.load(...)`: the C++ ops `r1_native::*`, built into the engine-cache entry (the
  compile backend on CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from r1_runtime.models.kernels import ops
from r1_runtime.models.kernels.attention import LayerAttention

# (q, k, v, layer index) -> attention output; reads the cache and masks of the running step
AttentionKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
# (q, latent, layer index, value dim, softmax scale) -> MLA's output over the latent cache
LatentAttentionKernel = Callable[[torch.Tensor, torch.Tensor, int, int, float], torch.Tensor]
# (x, packed weight, bias, residual, out_features) -> x W^T + b (+ residual)
LinearKernel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, int], torch.Tensor
]
# (kv_cache, the step's attention metadata) -> the scope of one step, for `paged_attention`
StepScope = Callable[[torch.Tensor, LayerAttention], AbstractContextManager[None]]


@dataclass(frozen=True)
class Kernels:
    """One consistent set of kernels. `step` opens the scope in which `paged_attention`
    reads the step's cache and metadata; every model forward runs inside it."""

    name: str
    paged_attention: AttentionKernel
    latent_attention: LatentAttentionKernel
    packed_linear: LinearKernel
    argmax: Callable[[torch.Tensor], torch.Tensor]
    step: StepScope


PYTHON = Kernels(
    name="python",
    paged_attention=ops.step_paged_attention,
    latent_attention=ops.step_latent_attention,
    packed_linear=ops.packed_linear,
    argmax=ops.argmax,
    step=ops.step_attention,
)

TRACEABLE = Kernels(
    name="traceable",
    paged_attention=torch.ops.r1.paged_attention,
    latent_attention=torch.ops.r1.latent_attention,
    packed_linear=torch.ops.r1.packed_linear,
    argmax=ops.argmax,
    step=ops.step_attention,
)
