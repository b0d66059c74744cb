"""The synchronous engine: requests in, tokens out, one `step` at a time."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Sequence as Sequence_
from dataclasses import replace
from pathlib import Path

import torch

from r1_runtime.engine.model_runner import ModelRunner, load_runner
from r1_runtime.engine.scheduler import (
    ScheduledBatch,
    Scheduler,
    SchedulerConfig,
    SequenceOutput,
)
from r1_runtime.engine.sequence import SamplingParams, Sequence
from r1_runtime.models.config import eos_token_ids, read_config


class QueueFullError(RuntimeError):
    """The waiting queue is full: retry later (the server answers 429)."""


class InvalidRequestError(ValueError):
    """The request cannot run as given (an empty prompt, a token id outside the vocabulary);
    the server answers 400."""


class PromptTooLongError(InvalidRequestError):
    """The prompt leaves no room for an output within `max_model_len`."""


class LLMEngine:
    """Continuous batching over one model. Not thread-safe: one thread calls every method
    (`AsyncEngine` runs it in its own thread)."""

    def __init__(
        self,
        runner: ModelRunner,
        config: SchedulerConfig,
        max_model_len: int,
        vocab_size: int | None = None,
    ) -> None:
        self.runner = runner
        self.scheduler = Scheduler(config)
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size  # None: prompt token ids are not range-checked
        self._request_ids = itertools.count()
        # Requests not yet scheduled: when they were queued. Then, until their first output,
        # how long they waited.
        self._queued_at: dict[str, float] = {}
        self._queue_seconds: dict[str, float] = {}

    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | Path,
        *,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        max_batch_tokens: int = 2048,
        max_num_seqs: int = 64,
        max_model_len: int | None = None,
        max_waiting: int = 1024,
        block_size: int = 16,
        prefill_chunk_size: int | None = None,
        kv_cache_memory: int | None = None,
        kv_cache_fraction: float = 0.2,
        num_kv_blocks: int | None = None,
    ) -> LLMEngine:
        """Load a Hugging Face checkpoint directory. The KV cache holds `num_kv_blocks` blocks,
        else as many as `kv_cache_memory` bytes take, else `kv_cache_fraction` of the free
        memory (capped at what `max_num_seqs` full-length sequences use twice over).
        `max_model_len` defaults to the config's `max_position_embeddings`."""
        loaded = load_runner(
            model_dir,
            dtype=dtype,
            device=torch.device(device),
            block_size=block_size,
            max_num_seqs=max_num_seqs,
            max_model_len=max_model_len,
            kv_cache_memory=kv_cache_memory,
            kv_cache_fraction=kv_cache_fraction,
            num_kv_blocks=num_kv_blocks,
        )
        config = SchedulerConfig(
            num_blocks=loaded.num_blocks,
            block_size=block_size,
            max_batch_tokens=max_batch_tokens,
            max_num_seqs=max_num_seqs,
            max_waiting=max_waiting,
            prefill_chunk_size=prefill_chunk_size,
            eos_token_ids=eos_token_ids(model_dir),
        )
        vocab_size = int(read_config(model_dir)["vocab_size"])
        return cls(loaded.runner, config, loaded.max_model_len, vocab_size)

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
        self._check_prompt(prompt_token_ids)
        room = self.max_model_len - len(prompt_token_ids)
        if room < 1:
            raise PromptTooLongError(
                f"{len(prompt_token_ids)} prompt tokens leave no room within "
                f"max_model_len={self.max_model_len}"
            )
        if params.max_tokens > room:
            params = replace(params, max_tokens=room)
        seq_id = request_id if request_id is not None else f"req-{next(self._request_ids)}"
        if not self.scheduler.try_add(Sequence(seq_id, prompt_token_ids, params)):
            raise QueueFullError(f"{self.scheduler.num_waiting} requests are already waiting")
        self._queued_at[seq_id] = time.monotonic()
        return seq_id

    def _check_prompt(self, prompt_token_ids: list[int]) -> None:
        if not prompt_token_ids:
            raise InvalidRequestError("the prompt is empty: give at least one token")
        lowest, highest = min(prompt_token_ids), max(prompt_token_ids)
        if lowest < 0 or (self.vocab_size is not None and highest >= self.vocab_size):
            raise InvalidRequestError(
                f"prompt token ids must be in [0, {self.vocab_size}), got {lowest}..{highest}"
            )

    def step(self) -> list[SequenceOutput]:
        """Run one scheduled step; what it changed per sequence (none when idle). A request's
        first output carries `queue_seconds`: from `add_request` to its first scheduled step."""
        batch = self.scheduler.schedule()
        if batch is None:
            return []
        self._note_started(batch)
        outputs = self.scheduler.postprocess(batch, self.runner.run(batch))
        return [self._with_queue_time(output) for output in outputs]

    def abort(self, request_id: str) -> bool:
        """Finish a request now and free its KV blocks; False if unknown or finished."""
        self._queued_at.pop(request_id, None)
        self._queue_seconds.pop(request_id, None)
        return self.scheduler.abort(request_id)

    def _note_started(self, batch: ScheduledBatch) -> None:
        if not self._queued_at:  # the common decode step: nobody is waiting to start
            return
        now = time.monotonic()
        for seq in [entry.seq for entry in batch.seqs] + list(batch.finished):
            queued_at = self._queued_at.pop(seq.seq_id, None)
            if queued_at is not None:
                self._queue_seconds[seq.seq_id] = now - queued_at

    def _with_queue_time(self, output: SequenceOutput) -> SequenceOutput:
        queue_seconds = self._queue_seconds.pop(output.seq_id, None)
        return output if queue_seconds is None else replace(output, queue_seconds=queue_seconds)

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
