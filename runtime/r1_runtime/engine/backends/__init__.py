"""How the engine runs its model: `eager` (PyTorch ops one by one), `compile` (torch.compile
with inductor, its artifacts cached in the engine entry) or `tensorrt` (Torch-TensorRT, NVIDIA
GPUs). `get_backend(name, device)` is the registry; `base.Backend` the interface.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from r1_runtime.engine.backends.base import Backend, BackendUnavailableError


def _eager(device: torch.device) -> Backend:
    from r1_runtime.engine.backends.eager import EagerBackend

    return EagerBackend()


def _compile(device: torch.device) -> Backend:
    # NOTE: imported when chosen: torch.compile's modules take seconds to import
    from r1_runtime.engine.backends.compile import CompileBackend

    return CompileBackend(device)


def _tensorrt(device: torch.device) -> Backend:
    from r1_runtime.engine.backends.tensorrt import TensorRTBackend

    return TensorRTBackend.for_device(device)


BACKENDS: dict[str, Callable[[torch.device], Backend]] = {
    "eager": _eager,
    "compile": _compile,
    "tensorrt": _tensorrt,
}


def get_backend(name: str, device: torch.device) -> Backend:
    """The backend called `name` for `device`. Raises `BackendUnavailableError` when it is
    unknown or cannot run here (tensorrt without an NVIDIA GPU or without its package)."""
    if name not in BACKENDS:
        raise BackendUnavailableError(f"{name!r} is not one of {', '.join(BACKENDS)}")
    return BACKENDS[name](device)


__all__ = ["BACKENDS", "Backend", "BackendUnavailableError", "get_backend"]
