"""(`RuntimeConfig`, `ModelInfo`) → a ready engine: the one place an engine is assembled, for
`serve`, `build`, the benchmarks and the tests.

`plan_engine` settles what the config asks for before any weight is loaded (backend, device,
dtype, our model or the transformers fallback) and refuses what cannot run here with a
`ConfigError` naming the flag; `build_engine` loads the weights, sizes and allocates the KV
cache, and prepares the backend: from the engine cache's entry (keyed by `cached_engine_key`),
or built into it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import torch

from r1_runtime.config import ConfigError, RuntimeConfig
from r1_runtime.engine.backends import Backend, BackendUnavailableError, get_backend
from r1_runtime.engine.kv_cache import allocate_kv_cache, bytes_per_block, kv_cache_budget
from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.engine.model_runner import ModelRunner, PagedModelRunner, RecomputeModelRunner
from r1_runtime.engine.scheduler import SchedulerConfig
from r1_runtime.engine.warm_up import warm_up
from r1_runtime.engine_cache.resolve import (
    EngineKey,
    PhaseCallback,
    engine_key,
    missing_entry_message,
    prepare_from_cache,
)
from r1_runtime.engine_cache.store import Resolved
from r1_runtime.model_info import ModelInfo
from r1_runtime.models.base import PagedCausalLM, UnsupportedConfigError
from r1_runtime.models.kernels.attention import can_use_flash_attention
from r1_runtime.models.kernels.ops import can_pack
from r1_runtime.models.loader import load_model
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


@dataclass(frozen=True)
class BuiltEngine:
    engine: LLMEngine
    cache_entry: Resolved | None  # the engine cache entry it runs from; None for eager


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
    return EnginePlan(backend, device, dtype, own)


def cached_engine_key(config: RuntimeConfig, plan: EnginePlan) -> EngineKey | None:
    """The engine cache key of the planned engine; None when its backend builds nothing.
    Hashes the checkpoint's small files (large ones: see engine_cache/digests.py). With
    `--no-build-on-start`, `ConfigError` when the cache has no entry for it, naming the key
    and how to fill the cache."""
    if not plan.backend.needs_cache:
        return None
    backend = plan.backend
    key = engine_key(config, backend.name, backend.versions(), plan.device, plan.dtype)
    if not config.build_on_start and key.store.lookup(key.key) is None:
        raise ConfigError(missing_entry_message(key))
    return key


def build_engine(
    config: RuntimeConfig,
    info: ModelInfo,
    *,
    plan: EnginePlan | None = None,
    on_phase: PhaseCallback | None = None,
) -> BuiltEngine:
    """The engine `config` describes (planned by `plan_engine`, unless `plan` is given), its
    backend prepared: from the engine cache when the backend builds anything (built on a
    miss, `on_phase("building")` meanwhile, unless `--no-build-on-start`). Blocking, seconds
    to minutes."""
    plan = plan or plan_engine(config, info)
    backend = plan.backend.name
    logger.info(
        "loading %s on %s in %s, backend %s", info.directory, plan.device, plan.dtype, backend
    )
    runner, num_blocks = _runner(config, info, plan)
    max_len = min(_max_model_len(config, info), num_blocks * config.block_size)
    engine = LLMEngine(
        runner, _scheduler_config(config, info, num_blocks), max_len, info.vocab_size
    )
    logger.info(
        "%d KV blocks of %d tokens; max_model_len %d", num_blocks, config.block_size, max_len
    )
    if not isinstance(runner, PagedModelRunner):
        return BuiltEngine(engine, None)
    prepare = partial(runner.prepare, warm_up=partial(warm_up, engine))
    key = cached_engine_key(config, plan)
    if key is None:
        prepare(None)
        return BuiltEngine(engine, None)
    resolved = prepare_from_cache(prepare, key, may_build=config.build_on_start, on_phase=on_phase)
    return BuiltEngine(engine, resolved)


def find_or_build_entry(config: RuntimeConfig, info: ModelInfo) -> Resolved | None:
    """`r1-runtime build`: the engine cache entry for `config`, found (without loading the
    weights) or built. None when the backend builds nothing (eager)."""
    plan = plan_engine(config, info)
    key = cached_engine_key(config, plan)
    if key is None:
        return None
    found = key.store.lookup(key.key)
    if found is not None:
        logger.info("engine cache hit: %s", key.entry)
        return Resolved(key.key, key.entry, found, is_built=False)
    return build_engine(config, info, plan=plan).cache_entry


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


def _scheduler_config(config: RuntimeConfig, info: ModelInfo, num_blocks: int) -> SchedulerConfig:
    return SchedulerConfig(
        num_blocks=num_blocks,
        block_size=config.block_size,
        max_batch_tokens=config.max_batch_tokens,
        max_num_seqs=config.max_num_seqs,
        max_waiting=config.max_waiting,
        prefill_chunk_size=config.prefill_chunk_size,
        eos_token_ids=info.eos_token_ids,
    )


def _max_model_len(config: RuntimeConfig, info: ModelInfo) -> int:
    return config.max_model_len or info.max_position_embeddings


def _runner(config: RuntimeConfig, info: ModelInfo, plan: EnginePlan) -> tuple[ModelRunner, int]:
    """The runner and its number of KV blocks: our model over a KV cache allocated once, or
    the transformers fallback (no cache: its blocks are bookkeeping)."""
    blocks_per_seq = -(-_max_model_len(config, info) // config.block_size)
    if plan.own_model is None:
        from r1_runtime.models.hf_fallback import HFFallbackModel  # NOTE: imports transformers

        fallback = HFFallbackModel(info.directory, dtype=plan.dtype, device=plan.device)
        num_blocks = config.num_kv_blocks or config.max_num_seqs * blocks_per_seq
        return RecomputeModelRunner(fallback), num_blocks
    model = load_model(
        plan.own_model,
        info,
        dtype=plan.dtype,
        device=plan.device,
        max_positions=_max_model_len(config, info),
    )
    if plan.device.type == "cpu" and can_pack(plan.dtype):
        model.pack_linear_weights(batch_size=config.max_num_seqs)
    num_blocks = _num_kv_blocks(config, model, plan, 2 * config.max_num_seqs * blocks_per_seq)
    cache = allocate_kv_cache(
        model, num_blocks, config.block_size, dtype=plan.dtype, device=plan.device
    )
    use_flash = can_use_flash_attention(plan.device, plan.dtype, config.block_size)
    runner = PagedModelRunner(
        model, cache, plan.backend, block_size=config.block_size, use_flash=use_flash
    )
    return runner, num_blocks


def _num_kv_blocks(
    config: RuntimeConfig, model: PagedCausalLM, plan: EnginePlan, max_useful_blocks: int
) -> int:
    """`--num-kv-blocks`, else as many as `kv_cache_memory` bytes hold, else as many as the
    memory budget (`kv_cache_budget`) holds, capped at what the sequences can use twice over."""
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks
    per_block = bytes_per_block(model, config.block_size, plan.dtype)
    if config.kv_cache_memory is not None:
        num_blocks = config.kv_cache_memory // per_block
    else:
        budget = kv_cache_budget(plan.device, config.gpu_memory_utilization)
        num_blocks = min(budget // per_block, max_useful_blocks)
    if num_blocks < 1:
        raise ConfigError(
            f"the KV cache budget holds no block of {config.block_size} tokens ({per_block} "
            "bytes): raise --gpu-memory-utilization or set --num-kv-blocks"
        )
    return num_blocks
