"""The two completion APIs' responses for one request, whole or as stream chunks: a chat
completion (an assistant message, reasoning apart) or a text completion (text)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

from r1_runtime.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChoiceDelta,
    Completion,
    CompletionChoice,
    Usage,
)
from r1_runtime.server.reasoning import TextDelta


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class ChatResponder:
    """`chat.completion` and its chunks. The stream opens with the role; reasoning goes to
    `reasoning_content`, and a reasoning model's empty answer is `content: null`."""

    request_id: str
    model: str
    split_reasoning: bool  # a reasoning model: its reasoning goes apart from the answer
    created: int = field(default_factory=_now)

    def whole(self, output: TextDelta, finish_reason: str | None, usage: Usage) -> ChatCompletion:
        message = AssistantMessage(
            content=output.content if output.content or not self.split_reasoning else None,
            reasoning_content=output.reasoning or None,
        )
        choice = ChatChoice(message=message, finish_reason=finish_reason)
        return ChatCompletion(
            id=self.request_id,
            created=self.created,
            model=self.model,
            choices=[choice],
            usage=usage,
        )

    def opening(self) -> ChatCompletionChunk | None:
        return self._chunk(ChoiceDelta(role="assistant", content=""))

    def delta(self, delta: TextDelta) -> ChatCompletionChunk:
        content, reasoning = delta.content or None, delta.reasoning or None
        return self._chunk(ChoiceDelta(content=content, reasoning_content=reasoning))

    def finish(self, finish_reason: str | None) -> ChatCompletionChunk:
        return self._chunk(ChoiceDelta(), finish_reason)

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.request_id, created=self.created, model=self.model, choices=[], usage=usage
        )

    def _chunk(self, delta: ChoiceDelta, finish_reason: str | None = None) -> ChatCompletionChunk:
        choice = ChatChunkChoice(delta=delta, finish_reason=finish_reason)
        return ChatCompletionChunk(
            id=self.request_id, created=self.created, model=self.model, choices=[choice]
        )


@dataclass(frozen=True)
class CompletionResponder:
    """`text_completion`, whole or chunked (OpenAI streams the same shape)."""

    request_id: str
    model: str
    created: int = field(default_factory=_now)
    split_reasoning: ClassVar[bool] = False  # the text as the model wrote it

    def whole(self, output: TextDelta, finish_reason: str | None, usage: Usage) -> Completion:
        return self._completion(
            [CompletionChoice(text=output.content, finish_reason=finish_reason)], usage
        )

    def opening(self) -> Completion | None:
        return None

    def delta(self, delta: TextDelta) -> Completion:
        return self._completion([CompletionChoice(text=delta.content)])

    def finish(self, finish_reason: str | None) -> Completion:
        return self._completion([CompletionChoice(text="", finish_reason=finish_reason)])

    def usage(self, usage: Usage) -> Completion:
        return self._completion([], usage)

    def _completion(
        self, choices: list[CompletionChoice], usage: Usage | None = None
    ) -> Completion:
        return Completion(
            id=self.request_id, created=self.created, model=self.model, choices=choices, usage=usage
        )


Responder = ChatResponder | CompletionResponder
