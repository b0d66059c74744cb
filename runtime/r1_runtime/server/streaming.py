"""Server-sent events for streamed completions: one `data: {json}` event per chunk, the usage
chunk when asked for, then `data: [DONE]`. An error after the headers went out is sent as
an `{"error": ...}` event, which the official clients raise."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from r1_runtime.server.errors import APIError, error_body
from r1_runtime.server.generation import Generation
from r1_runtime.server.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    Completion,
    CompletionChoice,
    Delta,
    Usage,
)
from r1_runtime.server.reasoning import Delta as TextDelta

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event_stream(generation: Generation, events: AsyncGenerator[bytes, None]) -> StreamingResponse:
    """The SSE response. Closing the generation is also its background task, so a client
    that disconnects mid-stream always frees the request's KV blocks."""
    return StreamingResponse(
        _guarded(events),
        media_type="text/event-stream",
        headers=HEADERS,
        background=BackgroundTask(generation.close),
    )


def usage_of(generation: Generation) -> Usage:
    return Usage(
        prompt_tokens=generation.num_prompt_tokens,
        completion_tokens=generation.num_completion_tokens,
        total_tokens=generation.num_prompt_tokens + generation.num_completion_tokens,
    )


async def chat_events(
    generation: Generation, request_id: str, model: str, include_usage: bool
) -> AsyncGenerator[bytes, None]:
    """Chunks of a chat completion: the role first, then content and reasoning deltas."""
    created = int(time.time())

    def chunk(delta: Delta, finish_reason: str | None = None) -> ChatCompletionChunk:
        choice = ChatChunkChoice(delta=delta, finish_reason=finish_reason)
        return ChatCompletionChunk(id=request_id, created=created, model=model, choices=[choice])

    def to_chunk(delta: TextDelta) -> ChatCompletionChunk:
        return chunk(
            Delta(content=delta.content or None, reasoning_content=delta.reasoning or None)
        )

    yield _event(chunk(Delta(role="assistant", content="")))
    async with aclosing(generation.deltas()) as deltas:
        async for delta in deltas:
            yield _event(to_chunk(delta))
    yield _event(chunk(Delta(), generation.finish_reason))
    if include_usage:
        usage = usage_of(generation)
        yield _event(
            ChatCompletionChunk(
                id=request_id, created=created, model=model, choices=[], usage=usage
            )
        )
    yield DONE


async def completion_events(
    generation: Generation, request_id: str, model: str, include_usage: bool
) -> AsyncGenerator[bytes, None]:
    """Chunks of a text completion: text deltas, then the finish reason."""
    created = int(time.time())

    def chunk(text: str, finish_reason: str | None = None) -> Completion:
        choice = CompletionChoice(text=text, finish_reason=finish_reason)
        return Completion(id=request_id, created=created, model=model, choices=[choice])

    async with aclosing(generation.deltas()) as deltas:
        async for delta in deltas:
            yield _event(chunk(delta.content))
    yield _event(chunk("", generation.finish_reason))
    if include_usage:
        usage = usage_of(generation)
        yield _event(
            Completion(id=request_id, created=created, model=model, choices=[], usage=usage)
        )
    yield DONE


async def _guarded(events: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """The events; an `APIError` after the headers went out ends them with an error event."""
    try:
        async with aclosing(events):
            async for event in events:
                yield event
    except APIError as error:
        yield b"data: " + json.dumps({"error": error_body(error)}).encode() + b"\n\n"


def _event(chunk: BaseModel) -> bytes:
    exclude = {"usage"} if getattr(chunk, "usage", True) is None else None
    return b"data: " + chunk.model_dump_json(exclude=exclude).encode() + b"\n\n"
