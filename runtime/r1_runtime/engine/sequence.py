"""Request state: sampling parameters and one sequence's tokens, status, timing and KV
bookkeeping, with the request-level policy (the thinking budget) that goes with them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# The range `torch.Generator.manual_seed` accepts.
SEED_MIN = -(2**63)
SEED_MAX = 2**64 - 1


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued, or preempted and queued again; holds no KV blocks
    RUNNING = "running"  # holds KV blocks; in prefill (maybe over several steps) or decode
    FINISHED = "finished"


class FinishReason(enum.Enum):
    STOP = "stop"  # a stop token id, or EOS unless `ignore_eos`
    LENGTH = "length"  # `max_tokens` output tokens
    ABORT = "abort"  # the caller aborted it (client gone, cancelled)
    TOO_LONG = "too_long"  # it needs more KV blocks than the whole cache has: it can never run


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How to pick each next token and when to stop. Validated on construction."""

    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int | None = None  # None: no limit
    seed: int | None = None  # None: not reproducible
    max_tokens: int = 16
    stop_token_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False
    # The thinking budget: after this many output tokens without `think_end_token_id`, the
    # next token is forced to be `think_end_token_id`. Both set, or neither.
    max_reasoning_tokens: int | None = None
    think_end_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be in [{SEED_MIN}, {SEED_MAX}], got {self.seed}")
        self._validate_reasoning_budget()

    def _validate_reasoning_budget(self) -> None:
        if (self.max_reasoning_tokens is None) != (self.think_end_token_id is None):
            raise ValueError(
                "max_reasoning_tokens and think_end_token_id go together: set both or neither "
                f"(got {self.max_reasoning_tokens} and {self.think_end_token_id})"
            )
        if self.max_reasoning_tokens is not None and self.max_reasoning_tokens < 0:
            raise ValueError(f"max_reasoning_tokens must be >= 0, got {self.max_reasoning_tokens}")


@dataclass(eq=False)
class Sequence:
    """One request as the scheduler sees it. `token_ids` starts as the prompt; sampled tokens are
    appended. Compared by identity.

    The scheduler and the block manager own every field after construction; callers read them.
    """

    seq_id: str
    token_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    arrival_time: float = 0.0  # when the request was queued (the engine's monotonic clock)
    status: SequenceStatus = field(default=SequenceStatus.WAITING, init=False)
    finish_reason: FinishReason | None = field(default=None, init=False)
    num_prompt_tokens: int = field(init=False)
    # Tokens whose keys and values are in the KV cache (chunked prefill advances it in steps).
    # NOTE: num_computed_tokens <= len(block_table) * block_size, and an unfinished sequence
    # always has at least one uncomputed token: the one whose logits give the next token.
    num_computed_tokens: int = field(default=0, init=False)
    # KV block ids in position order: token i lives in block_table[i // block_size].
    block_table: list[int] = field(default_factory=list, init=False)
    # Chained content hashes of this sequence's full blocks, filled lazily by the block
    # manager; still valid after preemption, because tokens are only ever appended.
    block_hashes: list[bytes] = field(default_factory=list, init=False)
    # Set by the scheduler on admission: smaller means older.
    arrival_index: int = field(default=0, init=False)
    # Set by the scheduler when it first schedules the sequence (or ends it unscheduled).
    first_scheduled_time: float | None = field(default=None, init=False)
    # Whether `params.think_end_token_id` is among the outputs: the thinking budget is spent.
    has_ended_thinking: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not self.token_ids:
            raise ValueError(f"sequence {self.seq_id!r} has an empty prompt")
        self.token_ids = list(self.token_ids)  # ours to append to, not the caller's list
        self.num_prompt_tokens = len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def queue_seconds(self) -> float | None:
        """From arrival to the first scheduled step; None until then."""
        if self.first_scheduled_time is None:
            return None
        return self.first_scheduled_time - self.arrival_time

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def forced_token_id(self) -> int | None:
        """The id the next token must be, whatever is sampled, or None. The thinking budget:
        `think_end_token_id` after exactly `max_reasoning_tokens` outputs, none of them it."""
        params = self.params
        if (
            params.max_reasoning_tokens is None
            or self.num_output_tokens != params.max_reasoning_tokens
            or self.has_ended_thinking
        ):
            return None
        return params.think_end_token_id

    @property
    def is_prefill(self) -> bool:
        """Whether its next step computes the prompt (or, after preemption, prompt and outputs)
        rather than decoding the one newest token."""
        return self.num_output_tokens == 0 or self.num_uncomputed_tokens > 1

    def append_sampled(self, token_id: int) -> int:
        """Append the sampled token, or the one the thinking budget forces in its place; the
        token appended. The next step feeds the model the appended token, so the sampler never
        needs to know (a preempted sequence keeps its outputs, and its budget with them)."""
        forced = self.forced_token_id
        appended = token_id if forced is None else forced
        self.token_ids.append(appended)
        if appended == self.params.think_end_token_id:
            self.has_ended_thinking = True
        return appended

    def mark_scheduled(self, now: float) -> None:
        """Record the first time the scheduler took this sequence up (later ones change
        nothing)."""
        if self.first_scheduled_time is None:
            self.first_scheduled_time = now

    def finish(self, reason: FinishReason) -> None:
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
