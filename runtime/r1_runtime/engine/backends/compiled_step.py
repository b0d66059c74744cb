"""The model's step through torch.compile, shared by the `compile` and `tensorrt` backends."""

from __future__ import annotations

from typing import Any

import torch

from r1_runtime.engine.step_inputs import StepInputs
from r1_runtime.models.base import PagedCausalLM

# torch.compile's stance once warmed up: a step needing a new graph variant runs eagerly.
# NOTE: a compilation then would write outside the engine-cache entry.
AFTER_WARM_UP = "eager_on_recompile"


class CompiledStep:
    """`model.stage_output` through torch.compile. The model's attention kernels are opaque
    ops reading the step's cache and masks from `model.step` (see `kernels.ops.StepAttention`),
    so the graph only sees the number of tokens and of sampled rows. `stance` is
    torch.compile's (`torch.compiler.set_stance`) for each step.

    With a `decoder` (`PagedCausalLM.native_decoder`), a step of decodes only runs in it
    instead: one C++ call for the whole step, where the graph pays torch.compile's guards and
    wrapper and a kernel per norm, rotary and attention, which cost as much as the weights'
    streaming when a single sequence decodes."""

    def __init__(
        self,
        model: PagedCausalLM,
        kv_cache: torch.Tensor,
        decoder: Any = None,
        backend: str = "inductor",
        **options: Any,
    ):
        self.model = model
        self.kv_cache = kv_cache
        self.decoder = decoder
        self.compiled = torch.compile(
            model.stage_output, backend=backend, dynamic=True, fullgraph=True, **options
        )
        self.stance = "default"

    def __call__(self, inputs: StepInputs) -> torch.Tensor:
        meta = inputs.meta
        decodes = meta.decodes
        if self.decoder is not None and decodes is not None and meta.prefills is None:
            # NOTE: a decode is always sampled, so these logits are the sampled rows'
            tables = decodes.block_ids.view(decodes.num_seqs, -1)
            logits: torch.Tensor = self.decoder.decode(
                inputs.input_ids, inputs.positions, self.kv_cache, tables
            )
            return logits
        with self.model.step(self.kv_cache, meta), torch.compiler.set_stance(self.stance):
            logits = self.compiled(inputs.input_ids, inputs.positions, inputs.sample_indices)
        return logits
