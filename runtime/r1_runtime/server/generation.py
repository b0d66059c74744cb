"""One request from admission to its last token: submit to the engine, read its stream, turn
token ids into text deltas (detokenize, cut at a stop string, split R1's reasoning), count
tokens and time them, and abort the engine request if the reader goes away."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from r1_runtime.engine.async_engine import EngineDeadError, RequestHandle, StreamOutput
from r1_runtime.engine.llm_engine import InvalidRequestError, PromptTooLongError, QueueFullError
from r1_runtime.engine.sequence import FinishReason, SamplingParams
from r1_runtime.security.redaction import Rule, StreamRedactor
from r1_runtime.server.detokenizer import IncrementalDetokenizer
from r1_runtime.server.errors import APIError
from r1_runtime.server.metrics import RequestMetrics
from r1_runtime.server.reasoning import ReasoningParser, TextDelta
from r1_runtime.server.state import ServerState
from r1_runtime.server.stops import StopMatcher

FINISH_REASONS = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length"}


class OutputText:
    """Token ids in, text deltas out: detokenizer, then stop strings on the raw text, then
    (for chat with a reasoning model) the reasoning split, then redaction of each part."""

    def __init__(
        self,
        tokenizer: Any,
        stops: list[str],
        split_reasoning: bool,
        redaction_rules: tuple[Rule, ...] = (),
        keep_text: bool = False,
    ) -> None:
        self._detokenizer = IncrementalDetokenizer(tokenizer)
        self._stops = StopMatcher(stops)
        self._reasoning = ReasoningParser() if split_reasoning else None
        self._redaction = DeltaRedactor(redaction_rules)
        self._kept: list[TextDelta] | None = [] if keep_text else None

    @property
    def is_stopped(self) -> bool:
        return self._stops.is_stopped

    @property
    def num_redactions(self) -> int:
        return self._redaction.num_redactions

    @property
    def kept_text(self) -> TextDelta | None:
        """Everything emitted so far, joined, with `keep_text`; else None."""
        if self._kept is None:
            return None
        return TextDelta(
            "".join(delta.reasoning for delta in self._kept),
            "".join(delta.content for delta in self._kept),
        )

    def push(self, token_ids: list[int]) -> TextDelta:
        text, _ = self._stops.push(self._detokenizer.push(token_ids))
        return self._emit(self._redaction.push(self._split(text)))

    def finish(self) -> TextDelta:
        """What the pipeline still holds, once the engine is done with the request."""
        text, stopped = self._stops.push(self._detokenizer.flush())
        if not stopped:
            text += self._stops.flush()
        delta = self._split(text)
        if self._reasoning is not None:
            tail = self._reasoning.finish()
            delta = TextDelta(delta.reasoning + tail.reasoning, delta.content + tail.content)
        return self._emit(self._redaction.finish(delta))

    def _emit(self, delta: TextDelta) -> TextDelta:
        if self._kept is not None:
            self._kept.append(delta)
        return delta

    def _split(self, text: str) -> TextDelta:
        return self._reasoning.push(text) if self._reasoning else TextDelta(content=text)


class DeltaRedactor:
    """Redaction of reasoning and content, each its own stream. The reasoning's held-back tail
    is let out (redacted) as soon as content begins: the think block is over by then."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self._reasoning = StreamRedactor(rules)
        self._content = StreamRedactor(rules)

    @property
    def num_redactions(self) -> int:
        return self._reasoning.num_redactions + self._content.num_redactions

    def push(self, delta: TextDelta) -> TextDelta:
        reasoning = self._reasoning.push(delta.reasoning)
        if delta.content:
            reasoning += self._reasoning.finish()
        return TextDelta(reasoning, self._content.push(delta.content))

    def finish(self, delta: TextDelta) -> TextDelta:
        pushed = self.push(delta)
        return TextDelta(
            pushed.reasoning + self._reasoning.finish(), pushed.content + self._content.finish()
        )


async def start(
    state: ServerState, prompt_token_ids: list[int], params: SamplingParams, text: OutputText
) -> Generation:
    """Submit a request and wait for its first output, so that a refusal (queue full, prompt
    too long, engine gone) becomes an HTTP error before any response header is sent."""
    model = state.admit()
    try:
        handle = model.engine.submit(prompt_token_ids, params)
    except EngineDeadError as error:
        raise APIError(503, str(error), code="engine_stopped") from error
    state.track(handle)
    metrics = state.metrics.request(len(prompt_token_ids))
    try:
        first = await anext(handle)
    except BaseException as error:
        state.untrack(handle)
        handle.abort()  # a cancelled wait (client gone) must not leave the request running
        refusal = _refusal(error)
        if refusal is None:
            raise
        raise refusal from error
    return Generation(state, handle, first, text, metrics, len(prompt_token_ids))


def _refusal(error: BaseException) -> APIError | None:
    """The HTTP form of the engine refusing a request; None for anything else."""
    if isinstance(error, QueueFullError):
        return APIError(429, f"the server is busy: {error}; retry later", code="queue_full")
    if isinstance(error, PromptTooLongError):
        return APIError(400, str(error), code="context_length_exceeded")
    if isinstance(error, InvalidRequestError):
        return APIError(400, str(error), code="invalid_request")
    if isinstance(error, EngineDeadError):
        return APIError(503, str(error), code="engine_stopped")
    return None


class Generation:
    """An admitted request's stream. Iterate `deltas()` once; then `finish_reason` and the
    token counts are final."""

    def __init__(
        self,
        state: ServerState,
        handle: RequestHandle,
        first: StreamOutput,
        text: OutputText,
        metrics: RequestMetrics,
        num_prompt_tokens: int,
    ) -> None:
        self._state = state
        self._handle = handle
        self._first = first
        self._text = text
        self._metrics = metrics
        self.num_prompt_tokens = num_prompt_tokens
        self.num_completion_tokens = 0
        self.finish_reason: str | None = None
        self._is_closed = False

    async def deltas(self) -> AsyncGenerator[TextDelta, None]:
        """Text deltas, none of them empty. Closing the iterator early (the client went
        away) aborts the engine request, which frees its KV blocks."""
        output = self._first
        try:
            while True:
                delta = self._consume(output)
                if not delta.is_empty:
                    yield delta
                if self.finish_reason is not None:
                    return
                output = await self._next()
        finally:
            self.close()

    def _consume(self, output: StreamOutput) -> TextDelta:
        self.num_completion_tokens += len(output.token_ids)
        self._metrics.on_tokens(len(output.token_ids), output.queue_seconds)
        delta = self._text.push(output.token_ids)
        if self._text.is_stopped:
            self.finish_reason = "stop"
            self._handle.abort()  # the engine may not have finished: a stop string did
        elif output.finish_reason is FinishReason.TOO_LONG:
            raise APIError(400, "the request needs more KV cache than the server has")
        elif output.finish_reason is not None:
            self.finish_reason = FINISH_REASONS.get(output.finish_reason, "abort")
        else:
            return delta
        tail = self._text.finish()
        return TextDelta(delta.reasoning + tail.reasoning, delta.content + tail.content)

    async def _next(self) -> StreamOutput:
        try:
            return await anext(self._handle)
        except EngineDeadError as error:
            raise APIError(503, str(error), code="engine_stopped") from error

    def abort(self) -> None:
        """Stop generating (the client went away); `deltas()` then ends with `abort`."""
        self._handle.abort()

    def close(self) -> None:
        """Release the request: abort it in the engine unless it finished (which frees its KV
        blocks), stop tracking it, record its metrics. Idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        if self.finish_reason is None:
            self.finish_reason = "abort"
            self._handle.abort()
        self._state.untrack(self._handle)
        self._metrics.on_finish(self.finish_reason)
