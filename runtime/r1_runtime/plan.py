"""What a `RuntimeConfig` asks of the engine, settled before any weight is loaded: backend,
device, dtype, our model or the transformers fallback, and whether the model and the
machine can take the parallel layout. What cannot run here is a `ConfigError` naming the
flag, raised before the server listens (`r1_runtime.build` then builds the plan).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from r1_runtime.config import ConfigError, RuntimeConfig
from r1_runtime.engine.backends import Backend, BackendUnavailableError, get_backend
from r1_runtime.model_info import ModelInfo
from r1_runtime.models.base import UnsupportedConfigError
from r1_runtime.models.registry import OwnModel, own_model

logger = logging.getLogger(__name__)

DEFAULT_DTYPE = "bfloat16"  # when neither the flags nor the checkpoint name one


@dataclass(frozen=True)
class EnginePlan:
    """What a config asks for, settled before any weight is loaded."""

    backend: Backend
    device: torch.device
    dtype: torch.dtype
    own_model: OwnModel | None  # None: the transformers fallback runs the checkpoint


def plan_engine(config: RuntimeConfig, info: ModelInfo) -> EnginePlan:
    """Raises `ConfigError` for a backend that cannot run here or cannot run this model, and
    for an unknown dtype. Quick: reads nothing but what `info` holds."""
    device = engine_device(config)
    try:
        backend = get_backend(config.backend, device)
    except BackendUnavailableError as error:
        raise ConfigError(f"--backend {error}") from error
    dtype = _dtype(config, info)
    own = _own_model(info)
    if own is None and backend.name != "eager":
        raise ConfigError(
            f"--backend {backend.name}: this model runs through the transformers fallback, "
            "which only runs eager; use --backend eager"
        )
    if config.settings.quantization == "fp8" and "quantization_config" not in info.config:
        raise ConfigError(
            f"settings.json quantization fp8, but {info.directory}/config.json has no fp8 "
            "quantization_config: set spec.model.quantization to match the checkpoint"
        )
    if config.precision == "fp8":
        own = _with_fp8_weights(info, own)
    if config.layout.is_distributed:
        _check_parallel(config, own, backend, device)
    return EnginePlan(backend, device, dtype, own)


def _with_fp8_weights(info: ModelInfo, own: OwnModel | None) -> OwnModel:
    """`--precision fp8`: our model holding an fp8 checkpoint's weights as they are stored."""
    if own is None or getattr(own.config, "fp8_block", None) is None:
        raise ConfigError(
            f"--precision fp8 keeps an fp8 checkpoint's weights in fp8, and {info.directory} "
            "is not one our models run in fp8 (config.json: an fp8 quantization_config, "
            "DeepseekV3ForCausalLM); use --precision auto or bf16"
        )
    return OwnModel(own.model_class, replace(own.config, keep_fp8=True))


def _check_parallel(
    config: RuntimeConfig, own: OwnModel | None, backend: Backend, device: torch.device
) -> None:
    """What a tensor- or pipeline-parallel layout needs of the model, backend and devices."""
    sizes = "--tensor-parallel-size and --pipeline-parallel-size"
    if own is None:
        raise ConfigError(
            f"{sizes} must be 1 for this model: it runs through the transformers fallback, "
            "which runs on one device"
        )
    problem = own.model_class.parallel_problem(own.config, config.layout)
    if problem is not None:
        raise ConfigError(problem)
    local = config.layout.local_world_size
    if device.type == "cuda" and torch.cuda.device_count() < local:
        raise ConfigError(
            f"{sizes} over --nnodes {config.nnodes} put {local} ranks on each node, one per "
            f"GPU, but {torch.cuda.device_count()} GPUs are visible: give the pod {local} GPUs "
            "(spec.resources.gpus) or lower the sizes"
        )


def engine_device(config: RuntimeConfig) -> torch.device:
    """The device `config` names; by default a GPU when one is visible, else the CPU."""
    if config.device is not None:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _own_model(info: ModelInfo) -> OwnModel | None:
    try:
        return own_model(info)
    except UnsupportedConfigError as error:
        logger.info("%s: using the transformers fallback (%s)", info.directory, error)
        return None


def _dtype(config: RuntimeConfig, info: ModelInfo) -> torch.dtype:
    name = config.engine_dtype or info.dtype or DEFAULT_DTYPE
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"{info.directory}/config.json: unknown dtype {name!r}")
    return dtype
