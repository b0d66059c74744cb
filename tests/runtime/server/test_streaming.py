"""Streams as bytes on the wire (raw httpx): SSE framing, the usage chunk, `[DONE]`, and the
text they carry: multi-byte characters intact, the R1 reasoning split, the same text as
the non-streamed answer."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .harness import MODEL

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
THINK_END = "</think>"


def stream_events(http: httpx.Client, path: str, body: dict[str, Any]) -> list[str]:
    """The `data:` payloads of a streamed response, checking the SSE framing on the way."""
    with http.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == ""  # every event ends with a blank line
    assert all(event.startswith("data: ") and "\n" not in event for event in events[:-1])
    return [event.removeprefix("data: ") for event in events[:-1]]


def chunks(events: list[str]) -> list[dict[str, Any]]:
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def streamed_text(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, str]:
    """The joined deltas of a stream, by field (`text`, `content`, `reasoning_content`)."""
    joined: dict[str, str] = {}
    for chunk in chunks(stream_events(http, path, body)):
        for choice in chunk["choices"]:
            fields = choice.get("delta", choice)
            for key in ("text", "content", "reasoning_content"):
                joined[key] = joined.get(key, "") + (fields.get(key) or "")
    return joined


def test_a_chat_stream_is_role_deltas_finish_usage_done(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 5,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    parsed = chunks(stream_events(http, CHAT, body))
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert parsed[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "finish_reason": "length",
        "logprobs": None,
    }
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"]["completion_tokens"] == 5
    assert all("usage" not in chunk for chunk in parsed[:-1])
    assert len({chunk["id"] for chunk in parsed}) == 1
    assert {chunk["object"] for chunk in parsed} == {"chat.completion.chunk"}


def test_a_completion_stream_without_usage_ends_with_the_finish_chunk(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    parsed = chunks(stream_events(http, COMPLETIONS, body))
    assert parsed[-1]["choices"][0]["finish_reason"] == "length"
    assert {chunk["object"] for chunk in parsed} == {"text_completion"}
    assert all("usage" not in chunk for chunk in parsed)


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_streamed_multibyte_text_equals_the_whole_text(http: httpx.Client, seed: int) -> None:
    body = {
        "model": MODEL,
        "prompt": "多语言: 日本語, emoji 🎉, ñandú —",
        "max_tokens": 40,
        "temperature": 1.0,
        "seed": seed,
    }
    whole = http.post(COMPLETIONS, json=body).json()["choices"][0]["text"]
    assert streamed_text(http, COMPLETIONS, body)["text"] == whole
    assert any(ord(char) > 0x7F for char in whole)  # the sample did hit multi-byte tokens


def test_a_thinking_budget_closes_the_think_block_and_splits_the_answer(
    http: httpx.Client, tokenizer: Any
) -> None:
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    options = {"max_tokens": 12, "temperature": 0, "max_reasoning_tokens": 4}
    chat = http.post(CHAT, json={"model": MODEL, "messages": messages, **options}).json()
    message = chat["choices"][0]["message"]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    raw = http.post(
        COMPLETIONS, json={"model": MODEL, "prompt": prompt["input_ids"], **options}
    ).json()["choices"][0]["text"]
    assert THINK_END in raw
    assert message["reasoning_content"] + THINK_END + (message["content"] or "") == raw
    streamed = streamed_text(http, CHAT, {"model": MODEL, "messages": messages, **options})
    assert streamed["reasoning_content"] == message["reasoning_content"]
    assert streamed["content"] == (message["content"] or "")


def test_without_a_closing_tag_everything_is_reasoning(http: httpx.Client) -> None:
    messages = [{"role": "user", "content": "Think."}]
    body = {"model": MODEL, "messages": messages, "max_tokens": 6, "temperature": 0}
    message = http.post(CHAT, json=body).json()["choices"][0]["message"]
    assert message["content"] is None
    assert message["reasoning_content"]


def test_a_stop_string_inside_the_reasoning_stops_the_stream(http: httpx.Client) -> None:
    messages = [{"role": "user", "content": "Stop early"}]
    body = {"model": MODEL, "messages": messages, "max_tokens": 16, "temperature": 0}
    reasoning = http.post(CHAT, json=body).json()["choices"][0]["message"]["reasoning_content"]
    stop = reasoning[2:5]
    parsed = chunks(stream_events(http, CHAT, {**body, "stop": stop}))
    streamed = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in parsed)
    assert streamed == reasoning[: reasoning.index(stop)]
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
