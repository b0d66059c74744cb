"""`r1-runtime serve` settings: the command-line flags (the operator contract in
docs/runtime-flags.md) validated once, at start-up, into a frozen `RuntimeConfig`.

No torch here: `--help` and flag validation stay fast. Checks that need torch or the model
(is there a GPU for `--backend tensorrt`?) run when the engine is planned (`r1_runtime.build`).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1_runtime.files import read_json_object
from r1_runtime.layout import ParallelLayout
from r1_runtime.security.settings import SecuritySettings, SecuritySettingsError, parse_security

PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
API_KEYS_ENV = "R1_API_KEYS"


class ConfigError(ValueError):
    """A setting that cannot be honoured; the message names the flag and says why."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """`settings.json` (the operator's ConfigMap): the runtime settings that are not flags."""

    served_model_name: str | None = None
    quantization: str | None = None
    security: SecuritySettings = field(default_factory=SecuritySettings)


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """Everything `serve` was told, validated. Paths that must exist do; values are in range."""

    model: Path
    served_model_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "eager"
    precision: str = "auto"
    dtype: str = "auto"
    max_batch_tokens: int = 2048
    max_num_seqs: int = 64
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    nnodes: int = 1
    node_rank: int = 0
    engine_cache: Path | None = None
    build_on_start: bool = True
    api_key_file: Path | None = None
    api_keys: tuple[str, ...] = ()  # from the R1_API_KEYS environment variable
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    settings: Settings = field(default_factory=Settings)
    log_dir: Path | None = None
    # Not part of the operator contract: limits and test knobs with safe defaults.
    max_waiting: int = 256
    num_kv_blocks: int | None = None
    drain_timeout: float = 60.0
    max_request_bytes: int = 1 << 20
    rendezvous_timeout: float = 600.0  # for every rank of a replica to join
    collective_timeout: float = 300.0  # for one step's collective or message between ranks
    device: str | None = None  # None: a GPU when one is visible, else the CPU
    # Not flags: engine knobs for tests and benchmarks.
    block_size: int = 16  # token slots per KV block
    prefill_chunk_size: int | None = None  # prompt tokens per sequence per step; None: budget
    kv_cache_memory: int | None = None  # KV cache bytes, instead of a share of free memory

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def engine_dtype(self) -> str | None:
        """The torch dtype name the engine loads and computes in; None: the checkpoint's own.
        An explicit `--precision` wins over `--dtype`: the engine has one dtype (with
        `--precision fp8`, that of everything but the fp8 weights: `--dtype`'s)."""
        return PRECISION_DTYPES.get(self.precision) or (
            None if self.dtype == "auto" else self.dtype
        )

    @property
    def layout(self) -> ParallelLayout:
        return ParallelLayout(self.tensor_parallel_size, self.pipeline_parallel_size, self.nnodes)

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> RuntimeConfig:
        """Build from `add_serve_arguments`'s namespace; raise `ConfigError` on bad values."""
        settings = read_settings(args.settings) if args.settings else Settings()
        name = _served_model_name(args.served_model_name, settings, args.model)
        values = {
            key: value
            for key, value in vars(args).items()
            if key in cls.__dataclass_fields__ and key not in ("settings", "served_model_name")
        }
        keys = tuple(re.split(r"[\s,]+", environ.get(API_KEYS_ENV, "").strip()))
        return cls(
            **values,
            served_model_name=name,
            settings=settings,
            api_keys=tuple(key for key in keys if key),
        )


def read_settings(path: Path) -> Settings:
    """Parse `settings.json`; keys the runtime does not know are ignored."""
    try:
        raw = read_json_object(path)
    except ValueError as error:
        raise ConfigError(f"--settings {error}") from error
    settings = Settings(
        served_model_name=_typed(raw, "servedModelName", str, path),
        quantization=_typed(raw, "quantization", str, path),
        security=_security(raw, path),
    )
    if settings.quantization not in (None, "fp8"):
        raise ConfigError(
            f"--settings {path}: quantization {settings.quantization!r} is not supported by "
            "this runtime yet; serve an unquantized or an fp8 block-quantized (DeepSeek-R1's) "
            "checkpoint"
        )
    return settings


def _security(raw: dict[str, Any], path: Path) -> SecuritySettings:
    """The `security` object (docs/security.md); a bad value names its key and index."""
    try:
        return parse_security(raw.get("security"))
    except SecuritySettingsError as error:
        raise ConfigError(f"--settings {path}: {error}") from error


def _typed(raw: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    value = raw.get(key)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"--settings {path}: {key} must be a {kind.__name__} or null")
    return value


def _served_model_name(flag: str | None, settings: Settings, model: Path) -> str:
    if flag and settings.served_model_name and flag != settings.served_model_name:
        raise ConfigError(
            f"--served-model-name {flag!r} differs from settings.json's servedModelName "
            f"{settings.served_model_name!r}"
        )
    return flag or settings.served_model_name or model.name


def _validate(config: RuntimeConfig) -> None:
    _check_model(config.model)
    _check_limits(config)
    _check_unsupported(config)
    _check_files(config)
    _check_security(config)


def _check_model(model: Path) -> None:
    if not (model / "config.json").is_file():
        raise ConfigError(f"--model {model}: no config.json there (is the directory mounted?)")


def _check_limits(config: RuntimeConfig) -> None:
    positive = {
        "--max-batch-tokens": config.max_batch_tokens,
        "--max-num-seqs": config.max_num_seqs,
        "--max-model-len": config.max_model_len,
        "--tensor-parallel-size": config.tensor_parallel_size,
        "--pipeline-parallel-size": config.pipeline_parallel_size,
        "--nnodes": config.nnodes,
        "--max-waiting": config.max_waiting,
        "--num-kv-blocks": config.num_kv_blocks,
        "--max-request-bytes": config.max_request_bytes,
    }
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if config.max_batch_tokens < config.max_num_seqs:
        raise ConfigError(
            f"--max-batch-tokens ({config.max_batch_tokens}) must be >= --max-num-seqs "
            f"({config.max_num_seqs}): every running sequence decodes a token each step"
        )
    if not 0.1 < config.gpu_memory_utilization <= 0.99:
        raise ConfigError(
            f"--gpu-memory-utilization must be in (0.1, 0.99], got {config.gpu_memory_utilization}"
        )
    problem = config.layout.problem()
    if problem is not None:
        raise ConfigError(problem)
    if not 0 <= config.node_rank < config.nnodes:
        raise ConfigError(f"--node-rank {config.node_rank} is not in [0, --nnodes {config.nnodes})")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535], got {config.port}")
    for flag, seconds in {
        "--drain-timeout": config.drain_timeout,
        "--rendezvous-timeout": config.rendezvous_timeout,
        "--collective-timeout": config.collective_timeout,
    }.items():
        if seconds < 0:
            raise ConfigError(f"{flag} must be >= 0, got {seconds}")


def _check_unsupported(config: RuntimeConfig) -> None:
    """Flags the contract allows but this runtime cannot honour yet: refused, never ignored."""
    if config.precision == "int8":
        raise ConfigError(
            "--precision int8 needs an int8 engine, which this runtime does not build yet; use "
            "auto, bf16, fp16, fp32, or fp8 with an fp8 checkpoint"
        )


def _check_files(config: RuntimeConfig) -> None:
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS)")
    files = {
        "--api-key-file": config.api_key_file,
        "--tls-cert": config.tls_cert,
        "--tls-key": config.tls_key,
        "--tls-client-ca": config.tls_client_ca,
    }
    for flag, path in files.items():
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            raise ConfigError(f"{flag} {path}: not a readable file")


def _check_security(config: RuntimeConfig) -> None:
    if config.settings.security.audit.enabled and config.log_dir is None:
        raise ConfigError(
            "settings.json security.audit.enabled needs --log-dir: the audit log is written "
            "to LOG_DIR/$HOSTNAME/audit.jsonl (the cold tier)"
        )
