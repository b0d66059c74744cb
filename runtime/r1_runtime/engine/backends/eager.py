"""The `eager` backend: the model's PyTorch ops one by one. Nothing to build or cache."""

from __future__ import annotations

from pathlib import Path

import torch

from r1_runtime.engine.backends.base import Backend, WarmUp, run_model
from r1_runtime.engine.step_inputs import StepInputs
from r1_runtime.models.base import PagedCausalLM
from r1_runtime.models.kernels import PYTHON, Kernels


class EagerBackend(Backend):
    name = "eager"
    needs_cache = False

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def prepare(
        self, model: PagedCausalLM, kv_cache: torch.Tensor, entry: Path | None, warm_up: WarmUp
    ) -> Kernels:
        model.use_kernels(PYTHON)
        self.model, self.kv_cache = model, kv_cache
        return PYTHON

    def run(self, inputs: StepInputs) -> torch.Tensor:
        return run_model(self.model, self.kv_cache, inputs)
