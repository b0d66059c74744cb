"""The `tensorrt` backend: the model's step through Torch-TensorRT's torch.compile backend on an
NVIDIA GPU, its built TensorRT engines serialized into the engine entry.

Torch-TensorRT partitions the step's graph: the dense parts (projections, norms, rotary, MLP)
become TensorRT engines, the paged KV cache writes and attention (the traceable kernels) stay
PyTorch ops between them. Engines are built for the shapes the warm-up runs and written to
`entry/tensorrt` (`engine_cache_dir`); a later start with the same entry reuses them
(`reuse_cached_engines`) instead of building.

NOTE: unverified on hardware by its authors (no GPU where it was written); the `gpu`-marked test
in tests/runtime/test_backends.py builds, reloads and compares it with eager.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Any

import torch

from r1_runtime.engine.backends.base import (
    Backend,
    BackendUnavailableError,
    WarmUp,
    package_version,
)
from r1_runtime.engine.backends.compiled_step import AFTER_WARM_UP, CompiledStep
from r1_runtime.engine.step_inputs import StepInputs
from r1_runtime.models.base import PagedCausalLM
from r1_runtime.models.kernels import TRACEABLE, Kernels

logger = logging.getLogger(__name__)

TENSORRT_DIR = "tensorrt"  # inside the entry
ENGINE_CACHE_BYTES = 8 << 30  # Torch-TensorRT evicts beyond this; an entry holds one model


class TensorRTBackend(Backend):
    name = "tensorrt"
    needs_cache = True

    def __init__(self, device: torch.device, torch_tensorrt: Any) -> None:
        self.device = device
        self.torch_tensorrt = torch_tensorrt
        self.last_prepare_seconds: float | None = None

    @classmethod
    def for_device(cls, device: torch.device) -> TensorRTBackend:
        """Raises `BackendUnavailableError` without an NVIDIA GPU or without Torch-TensorRT."""
        if device.type != "cuda" or not torch.cuda.is_available() or torch.version.cuda is None:
            raise BackendUnavailableError(
                "tensorrt needs an NVIDIA GPU, and none is visible here; "
                "use the compile backend (CPU) or eager"
            )
        try:
            torch_tensorrt = importlib.import_module("torch_tensorrt")
        except ImportError as error:
            raise BackendUnavailableError(
                "tensorrt needs Torch-TensorRT (`pip install r1-operator[gpu]` or "
                f"`pip install torch-tensorrt`), which does not import here: {error}"
            ) from error
        return cls(device, torch_tensorrt)

    def versions(self) -> dict[str, str]:
        """torch, Torch-TensorRT and TensorRT: serialized engines are tied to all three."""
        return {
            "torch": torch.__version__,
            "torch_tensorrt": str(self.torch_tensorrt.__version__),
            "tensorrt": package_version("tensorrt") or "unknown",
        }

    def prepare(
        self, model: PagedCausalLM, kv_cache: torch.Tensor, entry: Path | None, warm_up: WarmUp
    ) -> Kernels:
        assert entry is not None, "the tensorrt backend builds into an engine-cache entry"
        model.use_kernels(TRACEABLE)
        cache_dir = entry / TENSORRT_DIR
        cache_dir.mkdir(exist_ok=True)
        options: dict[str, Any] = {
            "enabled_precisions": {kv_cache.dtype},
            "use_python_runtime": False,
            "min_block_size": 1,
            "cache_built_engines": True,
            "reuse_cached_engines": True,
            "engine_cache_dir": str(cache_dir),
            "engine_cache_size": ENGINE_CACHE_BYTES,
        }
        self.step = CompiledStep(model, kv_cache, backend="tensorrt", options=options)
        start = time.perf_counter()
        warm_up()
        self.step.stance = AFTER_WARM_UP
        self.last_prepare_seconds = time.perf_counter() - start
        logger.info("tensorrt backend ready from %s in %.1f s", entry, self.last_prepare_seconds)
        return TRACEABLE

    def run(self, inputs: StepInputs) -> torch.Tensor:
        return self.step(inputs)
