"""Loading the served model: the engine (in its own thread), its backend prepared from the
engine cache (docs/engine-cache.md), and the tokenizer. The one server module that touches
torch, and only at start-up, off the event loop."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from r1_runtime.config import ConfigError, RuntimeConfig
from r1_runtime.engine.async_engine import AsyncEngine
from r1_runtime.engine.backends import Backend, get_backend
from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.engine_cache.resolve import (
    EngineKey,
    PhaseCallback,
    engine_key,
    missing_entry_message,
    prepare_engine,
)
from r1_runtime.engine_cache.store import Resolved
from r1_runtime.models.config import read_config

logger = logging.getLogger(__name__)

THINK_END = "</think>"


@dataclass(frozen=True)
class LoadedModel:
    """What the routes need of the model. Derived values are computed once, here."""

    engine: AsyncEngine
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    max_model_len: int  # prompt plus output: the engine's limit, within the KV cache's room
    vocab_size: int  # token ids in a prompt must be below it
    think_end_token_id: int | None  # None: not a reasoning model, no reasoning split
    created: int  # unix time the model was loaded (the `created` of /v1/models)


@dataclass(frozen=True)
class EnginePlan:
    """What `config` asks for, settled before any weight is loaded."""

    backend: Backend
    device: torch.device
    dtype: torch.dtype
    cached: EngineKey | None  # None: the backend builds nothing (eager)


def check_backend(config: RuntimeConfig) -> Backend:
    """The backend `config` asks for; `ConfigError` at once if this machine or this runtime
    cannot run it (e.g. `tensorrt` without an NVIDIA GPU)."""
    return get_backend(config.backend, engine_device())


def engine_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def plan_engine(config: RuntimeConfig) -> EnginePlan:
    """The backend, device, dtype and engine cache key. Hashes the checkpoint's small files
    (weights: see engine_cache/digests.py); `ConfigError` when
    `--no-build-on-start` finds no cached engine, naming the key and how to fill the cache."""
    device = engine_device()
    backend = get_backend(config.backend, device)
    dtype = _dtype(config, read_config(config.model))
    cached = engine_key(config, backend, device, dtype) if backend.needs_cache else None
    if cached is not None and not config.build_on_start and cached.store.lookup(cached.key) is None:
        raise ConfigError(missing_entry_message(cached))
    return EnginePlan(backend, device, dtype, cached)


def load_model(config: RuntimeConfig, on_phase: PhaseCallback | None = None) -> LoadedModel:
    """Load weights and tokenizer, prepare the engine's backend (from the engine cache, or
    built into it: `on_phase("building")` meanwhile) and start the engine thread. Blocking:
    run it off the loop."""
    from transformers import AutoTokenizer

    engine, _ = load_engine(config, plan_engine(config), on_phase)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    scheduler = engine.scheduler.config
    kv_room = scheduler.num_blocks * scheduler.block_size
    max_model_len = min(engine.max_model_len, kv_room)
    logger.info(
        "%d KV blocks (%d tokens); max_model_len %d", scheduler.num_blocks, kv_room, max_model_len
    )
    return LoadedModel(
        engine=AsyncEngine(engine),
        tokenizer=tokenizer,
        max_model_len=max_model_len,
        vocab_size=int(read_config(config.model)["vocab_size"]),
        think_end_token_id=tokenizer.get_vocab().get(THINK_END),
        created=int(time.time()),
    )


def load_engine(
    config: RuntimeConfig, plan: EnginePlan, on_phase: PhaseCallback | None = None
) -> tuple[LLMEngine, Resolved | None]:
    """The engine `config` describes, running its backend, and the engine cache entry it
    runs from (None for `eager`): loaded, or built on a miss (unless `--no-build-on-start`)."""
    logger.info(
        "loading %s on %s in %s, backend %s",
        config.model,
        plan.device,
        plan.dtype,
        plan.backend.name,
    )
    engine = _engine(config, plan.device, plan.dtype)
    if plan.cached is None:
        return engine, None
    resolved = prepare_engine(
        engine, plan.backend, plan.cached, may_build=config.build_on_start, on_phase=on_phase
    )
    return engine, resolved


def build_engine(config: RuntimeConfig) -> Resolved | None:
    """`r1-runtime build`: the engine cache entry for `config`, found (without loading the
    weights) or built. None when the backend builds nothing (eager)."""
    plan = plan_engine(config)
    if plan.cached is None:
        return None
    store, key = plan.cached.store, plan.cached.key
    found = store.lookup(key)
    if found is not None:
        logger.info("engine cache hit: %s", store.entry(key))
        return Resolved(key, store.entry(key), found, is_built=False)
    _, resolved = load_engine(config, plan)
    return resolved


def _engine(config: RuntimeConfig, device: torch.device, dtype: torch.dtype) -> LLMEngine:
    load = partial(
        LLMEngine.from_model_dir,
        config.model,
        dtype=dtype,
        device=device,
        max_batch_tokens=config.max_batch_tokens,
        max_num_seqs=config.max_num_seqs,
        max_model_len=config.max_model_len,
        max_waiting=config.max_waiting,
        num_kv_blocks=config.num_kv_blocks,
    )
    # NOTE: on a GPU the KV cache takes its share of the memory the weights left free; on a
    # host, the engine's own default share of the available memory applies.
    if device.type == "cuda":
        return load(kv_cache_fraction=config.gpu_memory_utilization)
    return load()


def _dtype(config: RuntimeConfig, raw: dict[str, Any]) -> torch.dtype:
    name = config.engine_dtype or raw.get("dtype") or raw.get("torch_dtype") or "bfloat16"
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"{config.model}/config.json: unknown dtype {name!r}")
    return dtype
