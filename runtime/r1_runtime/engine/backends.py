"""How the engine runs its model: `eager` (PyTorch ops one by one), `compile` (torch.compile with
inductor, its artifacts cached in the engine entry) or `tensorrt` (Torch-TensorRT, NVIDIA GPUs).

The engine cache (`r1_runtime.engine_cache`) drives a backend through one interface:
`get_backend(name, device)`, then `backend.prepare(engine, entry)` once the engine is loaded,
with an empty directory to build into or a published entry to load from.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from r1_runtime.config import ConfigError

if TYPE_CHECKING:
    from r1_runtime.engine.llm_engine import LLMEngine
    from r1_runtime.engine.model_runner import PagedModelRunner

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("eager", "compile", "tensorrt")


class Backend(Protocol):
    name: str  # "eager" | "compile" | "tensorrt"
    needs_cache: bool  # False for eager: nothing to build or store

    def versions(self) -> dict[str, str]:
        """Library versions the artifacts depend on: part of the engine cache key."""
        ...

    def prepare(self, engine: LLMEngine, entry: Path) -> None:
        """Make `engine` run this backend, reading and writing its artifacts under `entry` (an
        existing directory): empty to build (artifacts never depend on its absolute path, as the
        cache publishes it by renaming), or a published entry to load. After it returns, the
        first request runs at full speed."""
        ...


class EagerBackend:
    """PyTorch ops one by one: what `LLMEngine.from_model_dir` gives. Nothing to build."""

    name = "eager"
    needs_cache = False

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def prepare(self, engine: LLMEngine, entry: Path) -> None:
        return None


def get_backend(name: str, device: torch.device) -> Backend:
    """The backend called `name` for `device`. Raises `ConfigError` naming `--backend` when it
    is unknown or cannot run here (tensorrt without an NVIDIA GPU or without its package)."""
    if name == "eager":
        return EagerBackend()
    if name == "compile":
        from r1_runtime.engine.compile_backend import CompileBackend

        return CompileBackend(device)
    if name == "tensorrt":
        from r1_runtime.engine.tensorrt_backend import TensorRTBackend

        return TensorRTBackend.for_device(device)
    raise ConfigError(f"--backend {name!r} is not one of {', '.join(BACKEND_NAMES)}")


def paged_runner(engine: LLMEngine, backend: str) -> PagedModelRunner:
    """The engine's runner when it runs our own decoder; `ConfigError` for the transformers
    fallback, which only runs eager."""
    from r1_runtime.engine.model_runner import PagedModelRunner

    if not isinstance(engine.runner, PagedModelRunner):
        raise ConfigError(
            f"--backend {backend}: this model runs through the transformers fallback, which "
            "only runs eager; use --backend eager"
        )
    return engine.runner


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, None when it is not installed."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version(name)
    return None
