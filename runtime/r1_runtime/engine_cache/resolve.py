"""From a runtime config to a prepared engine: the key of the engine it asks for, then the
cache entry found, or built under the lock, and handed to the engine's `prepare`.

`serve` and `build` both go through here (from `r1_runtime.build`), so they agree on the key.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from r1_runtime.config import ConfigError, RuntimeConfig
from r1_runtime.engine_cache.device import device_descriptor
from r1_runtime.engine_cache.digests import DigestMemo, model_file_digests
from r1_runtime.engine_cache.key import cache_key, key_inputs, runtime_version
from r1_runtime.engine_cache.store import EngineStore, Resolved

logger = logging.getLogger(__name__)

StartupPhase = Literal["loading", "building"]  # loading the weights, or building the engine
PhaseCallback = Callable[[StartupPhase], None]
Prepare = Callable[[Path], None]  # makes the loaded engine run from (or build into) an entry


@dataclass(frozen=True)
class EngineKey:
    """The engine a config asks for: its key, what the key digests, and the store."""

    store: EngineStore
    key: str
    inputs: dict[str, Any]

    @property
    def entry(self) -> Path:
        return self.store.entry(self.key)


def default_engine_cache() -> Path:
    """Where a run without `--engine-cache` keeps engines: the user's cache directory."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "r1-runtime" / "engines"


def engine_key(
    config: RuntimeConfig,
    backend: str,
    versions: dict[str, str],
    device: torch.device,
    dtype: torch.dtype,
    *,
    rank: int = 0,
) -> EngineKey:
    """The cache key of the engine `config` asks for on `device` (rank `rank` of its
    replica), built by `backend` with these library `versions`. Hashes the checkpoint's
    small files; large ones come from the fetch marker or the warm tier's digest memo."""
    store = EngineStore(config.engine_cache or default_engine_cache())
    started = time.monotonic()
    files = model_file_digests(config.model, DigestMemo(store.digest_memo_path))
    inputs = key_inputs(
        model_files=files,
        backend=backend,
        precision=config.precision,
        dtype=str(dtype).removeprefix("torch."),
        tensor_parallel_size=config.tensor_parallel_size,
        pipeline_parallel_size=config.pipeline_parallel_size,
        rank=rank,
        max_batch_tokens=config.max_batch_tokens,
        max_num_seqs=config.max_num_seqs,
        max_model_len=config.max_model_len,
        device=device_descriptor(device),
        versions=versions,
        runtime_version=runtime_version(),
    )
    key = cache_key(inputs)
    logger.info("engine cache key %s (%.1f s to digest the model)", key, time.monotonic() - started)
    return EngineKey(store, key, inputs)


def missing_entry_message(engine_key: EngineKey) -> str:
    """Why `serve --no-build-on-start` stops, and how to fill the cache."""
    return (
        f"no cached {engine_key.inputs['backend']} engine for key {engine_key.key} at "
        f"{engine_key.entry}, "
        "and --no-build-on-start forbids building one: fill the cache with `r1-runtime build` "
        "and the same engine flags (or set spec.engine.buildOnStart: true)"
    )


def prepare_from_cache(
    prepare: Prepare,
    engine_key: EngineKey,
    *,
    may_build: bool = True,
    on_phase: PhaseCallback | None = None,
) -> Resolved:
    """`prepare` the loaded engine from the cache entry for `engine_key`: loaded when it
    exists (or another builder published it while this one waited for the lock), else built
    into a temporary directory under the lock (phase "building") and published. A build
    leaves the engine prepared: `prepare` reads and writes the directory only while it runs.
    `ConfigError` when the entry is missing and `may_build` is False."""
    store, key = engine_key.store, engine_key.key
    store.clean_stale_temp()
    if store.lookup(key) is None:
        if not may_build:
            raise ConfigError(missing_entry_message(engine_key))
        if on_phase is not None:
            on_phase("building")
    resolved = store.get_or_build(key, engine_key.inputs, prepare)
    if on_phase is not None:
        on_phase("loading")
    if resolved.is_built:
        logger.info(
            "engine cache miss: built %s in %.1f s (%.1f MB)",
            resolved.entry,
            resolved.manifest.build_seconds,
            resolved.manifest.num_bytes / 1e6,
        )
        return resolved
    started = time.monotonic()
    prepare(resolved.entry)
    logger.info(
        "engine cache hit: loaded %s in %.1f s (waited %.1f s for another builder)",
        resolved.entry,
        time.monotonic() - started,
        resolved.lock_wait_s,
    )
    return resolved
