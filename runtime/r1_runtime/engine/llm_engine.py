"""The synchronous engine: requests in, tokens out, one `step` at a time."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Sequence as Sequence_
from dataclasses import replace

from r1_runtime.engine.batch import SequenceOutput
from r1_runtime.engine.model_runner import ModelRunner
from r1_runtime.engine.scheduler import Scheduler, SchedulerConfig
from r1_runtime.engine.sequence import SamplingParams, Sequence
from r1_runtime.engine.stats import EngineStats


class QueueFullError(RuntimeError):
    """The waiting queue is full: retry later (the server answers 429)."""


class InvalidRequestError(ValueError):
    """The request's prompt cannot run as given (empty, a token id outside the vocabulary);
    the server answers 400."""


class PromptTooLongError(InvalidRequestError):
    """The prompt leaves no room for an output within `max_model_len`."""


class LLMEngine:
    """Continuous batching over one model. Not thread-safe: one thread calls every method
    (`AsyncEngine` runs it in its own thread). Built by `r1_runtime.build.build_engine`."""

    def __init__(
        self, runner: ModelRunner, config: SchedulerConfig, max_model_len: int, vocab_size: int
    ) -> None:
        self.runner = runner
        self.scheduler = Scheduler(config)
        self.max_model_len = max_model_len  # prompt plus output, within the KV cache's room
        self.vocab_size = vocab_size
        self._request_ids = itertools.count()
        self.stats = EngineStats()  # replaced, never changed: readable from any thread

    @property
    def has_unfinished(self) -> bool:
        return not self.scheduler.is_idle

    def add_request(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
    ) -> str:
        """Queue a request and return its id. `max_tokens` is capped so that prompt and output
        fit in `max_model_len`. Raises `QueueFullError` when the waiting queue is full,
        `PromptTooLongError` when the prompt alone fills `max_model_len` and
        `InvalidRequestError` for an empty prompt or a token id outside the vocabulary."""
        params = params or SamplingParams()
        self.check_prompt(prompt_token_ids)
        room = self.max_model_len - len(prompt_token_ids)
        if params.max_tokens > room:
            params = replace(params, max_tokens=room)
        seq_id = request_id if request_id is not None else f"req-{next(self._request_ids)}"
        seq = Sequence(seq_id, prompt_token_ids, params, arrival_time=time.monotonic())
        if not self.scheduler.try_add(seq):
            raise QueueFullError(f"{self.scheduler.num_waiting} requests are already waiting")
        self._publish_stats()
        return seq_id

    def check_prompt(self, prompt_token_ids: list[int]) -> None:
        """Raise `InvalidRequestError` (or `PromptTooLongError`) unless the prompt can run."""
        if not prompt_token_ids:
            raise InvalidRequestError("the prompt is empty: give at least one token")
        lowest, highest = min(prompt_token_ids), max(prompt_token_ids)
        if lowest < 0 or highest >= self.vocab_size:
            raise InvalidRequestError(
                f"prompt token ids must be in [0, {self.vocab_size}), got {lowest}..{highest}"
            )
        if len(prompt_token_ids) >= self.max_model_len:
            raise PromptTooLongError(
                f"the prompt is {len(prompt_token_ids)} tokens, and this model's context is "
                f"{self.max_model_len} tokens including the output"
            )

    def step(self) -> list[SequenceOutput]:
        """Run one scheduled step; what it changed per sequence (none when idle)."""
        batch = self.scheduler.schedule()
        if batch is None:
            return []
        started = time.perf_counter()
        outputs = self.scheduler.postprocess(batch, self.runner.run(batch))
        self._publish_stats(batch.num_tokens, time.perf_counter() - started)
        return outputs

    def idle(self) -> None:
        """Nothing to run: let the runner check on what it depends on (the other ranks)."""
        self.runner.idle()

    def abort(self, request_id: str) -> bool:
        """Finish a request now and free its KV blocks; False if unknown or finished."""
        aborted = self.scheduler.abort(request_id)
        self._publish_stats()
        return aborted

    def _publish_stats(self, num_step_tokens: int | None = None, seconds: float = 0.0) -> None:
        scheduler, blocks = self.scheduler, self.scheduler.block_manager
        last = self.stats
        self.stats = EngineStats(
            num_running=scheduler.num_running,
            num_waiting=scheduler.num_waiting,
            kv_cache_usage=blocks.usage,
            num_preemptions=scheduler.num_preemptions,
            num_prefix_cache_queries=blocks.num_prefix_cache_queries,
            num_prefix_cache_hits=blocks.num_prefix_cache_hits,
            num_step_tokens=last.num_step_tokens if num_step_tokens is None else num_step_tokens,
            step_seconds=last.step_seconds if num_step_tokens is None else seconds,
        )

    def generate(
        self,
        prompts: Sequence_[list[int]],
        params: SamplingParams | Sequence_[SamplingParams] | None = None,
    ) -> list[list[int]]:
        """Run every prompt to completion (queueing more as the waiting queue frees up) and
        return the output ids in prompt order. For tests and benchmarks."""
        all_params = params if isinstance(params, Sequence_) else [params] * len(prompts)
        pending = deque(zip(prompts, all_params, strict=True))
        order: dict[str, int] = {}
        outputs: list[list[int]] = [[] for _ in prompts]
        while pending or self.has_unfinished:
            while pending and self.scheduler.num_waiting < self.scheduler.config.max_waiting:
                prompt, prompt_params = pending.popleft()
                order[self.add_request(prompt, prompt_params)] = len(order)
            for output in self.step():
                if output.seq_id in order:
                    outputs[order[output.seq_id]].extend(output.new_token_ids)
        return outputs
