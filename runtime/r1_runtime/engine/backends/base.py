"""What a backend is to the engine: how its model's step runs. Prepared once, when the engine
is built (choosing the kernels, and building or loading what it compiles under an engine-cache
entry), then asked to run each step.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch

from r1_runtime.engine.step_inputs import StepInputs
from r1_runtime.models.base import PagedCausalLM
from r1_runtime.models.kernels import Kernels

WarmUp = Callable[[], None]  # runs the step shapes a server meets through the engine


class BackendUnavailableError(ValueError):
    """The backend cannot run on this machine (no NVIDIA GPU, a package missing); the message
    says why and what to use instead."""


class Backend(ABC):
    """How the engine runs its model: `prepare` once, then `run` for every step."""

    name: ClassVar[str]  # "eager" | "compile" | "tensorrt"
    needs_cache: ClassVar[bool]  # whether `prepare` builds artifacts the engine cache keeps

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Library versions the artifacts depend on: part of the engine cache key."""

    @abstractmethod
    def prepare(
        self, model: PagedCausalLM, kv_cache: torch.Tensor, entry: Path | None, warm_up: WarmUp
    ) -> Kernels:
        """Choose the kernels and hand them to `model`, then make `run` serve steps on
        `kv_cache`. With `needs_cache`, `entry` is an existing directory: empty to build into
        (artifacts never depend on its absolute path: the cache publishes it by renaming), or
        a published entry to load from; `warm_up()` then runs, through `run`, the step shapes
        a server meets, so that the first request finds them ready. Returns the kernels."""

    @abstractmethod
    def run(self, inputs: StepInputs) -> torch.Tensor:
        """One step: fp32 logits `[num_sampled, vocab]` of the sampled rows (before the last
        pipeline stage: the hidden states for the next, see `PagedCausalLM.stage_output`)."""


def run_model(model: PagedCausalLM, kv_cache: torch.Tensor, inputs: StepInputs) -> torch.Tensor:
    """The model's step as it is, op by op."""
    with model.step(kv_cache, inputs.meta):
        return model.stage_output(
            inputs.input_ids, inputs.positions, inputs.sample_indices, inputs.hidden
        )


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, None when it is not installed."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version(name)
    return None
