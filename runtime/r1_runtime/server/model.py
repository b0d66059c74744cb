"""Loading the served model: the engine (in its own thread) and the tokenizer. The one server
module that touches torch, and only at start-up, off the event loop."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from r1_runtime.config import ConfigError, RuntimeConfig
from r1_runtime.engine.async_engine import AsyncEngine
from r1_runtime.engine.llm_engine import LLMEngine
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


def check_backend(config: RuntimeConfig) -> None:
    """Fail fast on a backend this machine or this runtime cannot run."""
    if config.backend == "tensorrt":
        if not torch.cuda.is_available():
            raise ConfigError("--backend tensorrt needs an NVIDIA GPU, and none is visible")
        raise ConfigError(
            "--backend tensorrt is not built by this runtime yet (it comes with the engine "
            "cache); use --backend eager or compile"
        )
    if config.backend == "compile":
        logger.warning("--backend compile: torch.compile is not applied yet; running eager")


def load_model(config: RuntimeConfig) -> LoadedModel:
    """Load weights and tokenizer and start the engine thread. Blocking: run it off the loop."""
    from transformers import AutoTokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raw = read_config(config.model)
    dtype = _dtype(config, raw)
    logger.info("loading %s on %s in %s", config.model, device, dtype)
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
    on_gpu = device.type == "cuda"
    engine = load(kv_cache_fraction=config.gpu_memory_utilization) if on_gpu else load()
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
        vocab_size=int(raw["vocab_size"]),
        think_end_token_id=tokenizer.get_vocab().get(THINK_END),
        created=int(time.time()),
    )


def _dtype(config: RuntimeConfig, raw: dict[str, Any]) -> torch.dtype:
    name = config.engine_dtype or raw.get("dtype") or raw.get("torch_dtype") or "bfloat16"
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"{config.model}/config.json: unknown dtype {name!r}")
    return dtype
