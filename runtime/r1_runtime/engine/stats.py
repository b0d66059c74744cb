"""What the engine publishes after every step, for metrics, health and the operator's figures
to read without reaching into the scheduler."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineStats:
    """The engine at one moment: after a step, an admission or an abort. Counters run from
    the engine's start; `num_step_tokens` and `step_seconds` are the last step's."""

    num_running: int = 0
    num_waiting: int = 0
    kv_cache_usage: float = 0.0  # fraction of KV blocks in use, 0 to 1
    num_preemptions: int = 0
    num_prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    num_prefix_cache_hits: int = 0  # of those, tokens found already computed
    num_step_tokens: int = 0
    step_seconds: float = 0.0
