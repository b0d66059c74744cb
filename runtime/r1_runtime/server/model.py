"""The served model: the engine (`r1_runtime.build`) running in its own thread, and the
tokenizer. Loaded once at start-up, off the event loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from r1_runtime.build import build_engine, cached_engine_key
from r1_runtime.config import RuntimeConfig
from r1_runtime.distributed.group import ProcessGroups
from r1_runtime.engine.async_engine import AsyncEngine
from r1_runtime.engine_cache.resolve import PhaseCallback
from r1_runtime.model_info import ModelInfo
from r1_runtime.plan import EnginePlan, plan_engine

THINK_END = "</think>"


@dataclass(frozen=True)
class LoadedModel:
    """What the routes need of the model. Derived values are computed once, here."""

    engine: AsyncEngine
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    max_model_len: int  # prompt plus output: the engine's limit, within the KV cache's room
    think_end_token_id: int | None  # None: not a reasoning model, no reasoning split
    created: int  # unix time the model was loaded (the `created` of /v1/models)


# Loads the model, telling its phase ("loading", "building") as it goes.
Loader = Callable[[PhaseCallback], LoadedModel]
# Joins the replica's other ranks (rank 0 of a tensor- or pipeline-parallel replica).
Join = Callable[[], ProcessGroups]


def model_loader(config: RuntimeConfig, join: Join | None = None) -> Loader:
    """`load_model` for `config`, planned now: a flag this machine cannot honour, or (with
    `--no-build-on-start`) an engine missing from the cache, is a `ConfigError` before the
    server starts; the weights load once it listens (after `join`, when given)."""
    info = ModelInfo.read(config.model)
    plan = plan_engine(config, info)
    if not config.build_on_start:
        cached_engine_key(config, plan)
    return partial(load_model, config, info, plan, join=join)


def load_model(
    config: RuntimeConfig,
    info: ModelInfo,
    plan: EnginePlan,
    on_phase: PhaseCallback,
    *,
    join: Join | None = None,
) -> LoadedModel:
    """Build the planned engine (its backend prepared from the engine cache, or built into it:
    `on_phase("building")` meanwhile), start its thread and load the tokenizer. Blocking:
    run it off the loop."""
    from transformers import AutoTokenizer

    groups = join() if join is not None else None
    built = build_engine(config, info, plan=plan, on_phase=on_phase, groups=groups)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    return LoadedModel(
        engine=AsyncEngine(built.engine),
        tokenizer=tokenizer,
        max_model_len=built.engine.max_model_len,
        think_end_token_id=tokenizer.get_vocab().get(THINK_END),
        created=int(time.time()),
    )
