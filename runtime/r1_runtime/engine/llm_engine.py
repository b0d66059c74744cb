"""The synchronous engine: requests in, tokens out, one `step` at a time."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence as Sequence_
from dataclasses import replace
from pathlib import Path

import torch

from r1_runtime.engine.model_runner import ModelRunner, load_runner
from r1_runtime.engine.scheduler import Scheduler, SchedulerConfig, SequenceOutput
from r1_runtime.engine.sequence import SamplingParams, Sequence
from r1_runtime.models.config import eos_token_ids


class QueueFullError(RuntimeError):
    """The waiting queue is full: retry later (the server answers 429)."""


class PromptTooLongError(ValueError):
    """The prompt leaves no room for an output within `max_model_len`."""


class LLMEngine:
    """Continuous batching over one model. Not thread-safe: one thread calls every method
    (`AsyncEngine` runs it in its own thread)."""

    def __init__(self, runner: ModelRunner, config: SchedulerConfig, max_model_len: int) -> None:
        self.runner = runner
        self.scheduler = Scheduler(config)
        self.max_model_len = max_model_len
        self._request_ids = itertools.count()

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
        return cls(loaded.runner, config, loaded.max_model_len)

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
        fit in `max_model_len`. Raises `QueueFullError` when the waiting queue is full and
        `PromptTooLongError` when the prompt alone fills `max_model_len`."""
        params = params or SamplingParams()
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
        return seq_id

    def step(self) -> list[SequenceOutput]:
        """Run one scheduled step; what it changed per sequence (none when idle)."""
        batch = self.scheduler.schedule()
        if batch is None:
            return []
        return self.scheduler.postprocess(batch, self.runner.run(batch))

    def abort(self, request_id: str) -> bool:
        """Finish a request now and free its KV blocks; False if unknown or finished."""
        return self.scheduler.abort(request_id)

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
