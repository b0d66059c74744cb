"""Server-sent events for streamed completions: one `data: {json}` event per chunk, the usage
chunk when asked for, then `data: [DONE]`. An error after the headers went out is sent as
an `{"error": ...}` event, which the official clients raise."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing

from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from r1_runtime.server.errors import APIError, error_body
from r1_runtime.server.generation import Generation
from r1_runtime.server.protocol import Usage
from r1_runtime.server.responders import Responder

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event_stream(
    generation: Generation, responder: Responder, include_usage: bool
) -> StreamingResponse:
    """The SSE response. Closing the generation is also its background task, so a client
    that disconnects mid-stream always frees the request's KV blocks."""
    return StreamingResponse(
        _guarded(_events(generation, responder, include_usage)),
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


async def _events(
    generation: Generation, responder: Responder, include_usage: bool
) -> AsyncGenerator[bytes, None]:
    """The chunks of a streamed completion: the opening one (chat: the role), one per text
    delta, the finish reason, the usage when asked for, then `[DONE]`."""
    opening = responder.opening()
    if opening is not None:
        yield _event(opening)
    async with aclosing(generation.deltas()) as deltas:
        async for delta in deltas:
            yield _event(responder.delta(delta))
    yield _event(responder.finish(generation.finish_reason))
    if include_usage:
        yield _event(responder.usage(usage_of(generation)))
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
