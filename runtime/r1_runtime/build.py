"""(`RuntimeConfig`, `ModelInfo`) → a ready engine: the one place an engine is assembled, for
`serve`, `build`, the benchmarks and the tests.

`build_engine` builds what `plan.plan_engine` settled: it loads the weights (a rank's shard of
them in a parallel replica), sizes and allocates the KV cache, and prepares the backend: from
the engine cache's entry (keyed by `cached_engine_key`), or built into it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from r1_runtime.config import ConfigError, RuntimeConfig
from r1_runtime.distributed.driver import DriverRunner
from r1_runtime.distributed.group import ProcessGroups
from r1_runtime.distributed.stage import StageRunner
from r1_runtime.distributed.worker import serve_warm_up
from r1_runtime.engine.kv_cache import allocate_kv_cache, bytes_per_block, kv_cache_budget
from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.engine.model_runner import PagedModelRunner, RecomputeModelRunner
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
from r1_runtime.models.base import PagedCausalLM
from r1_runtime.models.kernels.attention import can_use_flash_attention
from r1_runtime.models.kernels.ops import can_pack
from r1_runtime.models.loader import load_model
from r1_runtime.plan import EnginePlan, plan_engine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltEngine:
    engine: LLMEngine
    cache_entry: Resolved | None  # the engine cache entry it runs from; None for eager


def cached_engine_key(config: RuntimeConfig, plan: EnginePlan, rank: int = 0) -> EngineKey | None:
    """The engine cache key of the planned engine (of replica rank `rank`'s shard); None when
    its backend builds nothing. Hashes the checkpoint's small files (large ones: see
    engine_cache/digests.py). With `--no-build-on-start`, `ConfigError` when the cache has no
    entry for it, naming the key and how to fill the cache."""
    if not plan.backend.needs_cache:
        return None
    backend = plan.backend
    key = engine_key(config, backend.name, backend.versions(), plan.device, plan.dtype, rank=rank)
    if not config.build_on_start and key.store.lookup(key.key) is None:
        raise ConfigError(missing_entry_message(key))
    return key


def build_engine(
    config: RuntimeConfig,
    info: ModelInfo,
    *,
    plan: EnginePlan | None = None,
    on_phase: PhaseCallback | None = None,
    groups: ProcessGroups | None = None,
) -> BuiltEngine:
    """The engine `config` describes (planned by `plan_engine`, unless `plan` is given), its
    backend prepared: from the engine cache when the backend builds anything (built on a
    miss, `on_phase("building")` meanwhile, unless `--no-build-on-start`). With `groups`
    (rank 0 of a replica that has joined), the engine drives every rank; the others run
    `build_stage`'s in step. Blocking, seconds to minutes."""
    plan = plan or plan_engine(config, info)
    if config.layout.is_distributed and groups is None:
        raise ConfigError(
            "--tensor-parallel-size and --pipeline-parallel-size above 1 need the replica's "
            "ranks, which `r1-runtime serve` starts"
        )
    backend = plan.backend.name
    logger.info(
        "loading %s on %s in %s, backend %s", info.directory, plan.device, plan.dtype, backend
    )
    runner, num_blocks = _runner(config, info, plan, groups)
    max_len = min(_max_model_len(config, info), num_blocks * config.block_size)
    engine = LLMEngine(
        runner, _scheduler_config(config, info, num_blocks), max_len, info.vocab_size
    )
    logger.info(
        "%d KV blocks of %d tokens; max_model_len %d", num_blocks, config.block_size, max_len
    )
    if isinstance(runner, RecomputeModelRunner):
        return BuiltEngine(engine, None)
    prepare = partial(runner.prepare, warm_up=partial(warm_up, engine))
    return BuiltEngine(engine, _prepare(config, plan, prepare, rank=0, on_phase=on_phase))


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


def build_stage(config: RuntimeConfig, info: ModelInfo, groups: ProcessGroups) -> StageRunner:
    """A rank's part of the replica's engine (rank 0's is inside `build_engine`'s): its
    shard of the model and its KV cache, the backend prepared from this rank's own engine
    cache entry (its warm-up: rank 0's warm-up steps). Call on every rank in step."""
    plan = plan_engine(config, info)
    model, cache, _ = _load_paged(config, info, plan, groups)
    stage = _stage(config, plan, groups, model, cache)
    prepare = partial(stage.prepare, warm_up=partial(serve_warm_up, stage))
    _prepare(config, plan, prepare, rank=groups.place.rank, on_phase=None)
    return stage


def _prepare(
    config: RuntimeConfig,
    plan: EnginePlan,
    prepare: Callable[[Path | None], None],
    *,
    rank: int,
    on_phase: PhaseCallback | None,
) -> Resolved | None:
    """Prepare the backend: from rank `rank`'s engine cache entry when it builds anything;
    the entry, or None."""
    key = cached_engine_key(config, plan, rank)
    if key is None:
        prepare(None)
        return None
    return prepare_from_cache(prepare, key, may_build=config.build_on_start, on_phase=on_phase)


def _runner(
    config: RuntimeConfig, info: ModelInfo, plan: EnginePlan, groups: ProcessGroups | None
) -> tuple[PagedModelRunner | DriverRunner | RecomputeModelRunner, int]:
    """The runner and its number of KV blocks: our model over a KV cache allocated once
    (driving the other ranks with `groups`), or the transformers fallback (no cache: its
    blocks are bookkeeping)."""
    if plan.own_model is None:
        from r1_runtime.models.hf_fallback import HFFallbackModel  # NOTE: imports transformers

        fallback = HFFallbackModel(info.directory, dtype=plan.dtype, device=plan.device)
        num_blocks = config.num_kv_blocks or config.max_num_seqs * _blocks_per_seq(config, info)
        return RecomputeModelRunner(fallback), num_blocks
    model, cache, num_blocks = _load_paged(config, info, plan, groups)
    if groups is not None:
        return DriverRunner(_stage(config, plan, groups, model, cache)), num_blocks
    use_flash = _use_flash(config, plan, model)
    runner = PagedModelRunner(
        model, cache, plan.backend, block_size=config.block_size, use_flash=use_flash
    )
    return runner, num_blocks


def _load_paged(
    config: RuntimeConfig, info: ModelInfo, plan: EnginePlan, groups: ProcessGroups | None
) -> tuple[PagedCausalLM, torch.Tensor, int]:
    """Our model (this rank's shard of it with `groups`) and its KV cache; every rank of a
    replica gets as many blocks as the one with the least memory can hold."""
    assert plan.own_model is not None
    shard = groups.model_shard(plan.own_model.config.num_layers) if groups else None
    model = load_model(
        plan.own_model,
        info,
        dtype=plan.dtype,
        device=plan.device,
        max_positions=_max_model_len(config, info),
        shard=shard,
    )
    if plan.device.type == "cpu" and can_pack(plan.dtype):
        model.pack_linear_weights(batch_size=config.max_num_seqs)
    max_useful = 2 * config.max_num_seqs * _blocks_per_seq(config, info)
    num_blocks = _num_kv_blocks(config, model, plan, max_useful)
    if groups is not None:
        num_blocks = groups.min_over_ranks(num_blocks)
    cache = allocate_kv_cache(
        model, num_blocks, config.block_size, dtype=plan.dtype, device=plan.device
    )
    return model, cache, num_blocks


def _stage(
    config: RuntimeConfig,
    plan: EnginePlan,
    groups: ProcessGroups,
    model: PagedCausalLM,
    cache: torch.Tensor,
) -> StageRunner:
    return StageRunner(
        groups,
        plan.backend,
        model,
        cache,
        dtype=plan.dtype,
        block_size=config.block_size,
        use_flash=_use_flash(config, plan, model),
    )


def _use_flash(config: RuntimeConfig, plan: EnginePlan, model: PagedCausalLM) -> bool:
    return model.uses_flash_attention and can_use_flash_attention(
        plan.device, plan.dtype, config.block_size
    )


def _blocks_per_seq(config: RuntimeConfig, info: ModelInfo) -> int:
    return -(-_max_model_len(config, info) // config.block_size)


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
