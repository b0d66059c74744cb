"""The official `openai` client against the server: every route it calls, and every error
status arriving as the client's own exception class."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from .harness import MODEL, RunningServer

HELLO = [{"role": "user", "content": "Hello! How are you?"}]


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [model.id for model in models] == [MODEL]
    assert models[0].model_extra == {"max_model_len": 512}


def test_chat_completion_counts_usage_and_stops_at_max_tokens(
    client: openai.OpenAI, tokenizer: Any
) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=6, temperature=0
    )
    choice = response.choices[0]
    assert (choice.finish_reason, choice.message.role) == ("length", "assistant")
    prompt = tokenizer.apply_chat_template(HELLO, add_generation_prompt=True, tokenize=True)
    assert response.usage is not None
    assert response.usage.prompt_tokens == len(prompt["input_ids"])
    assert response.usage.completion_tokens == 6
    assert response.usage.total_tokens == response.usage.prompt_tokens + 6
    assert response.id.startswith("chatcmpl-")


def test_max_completion_tokens_wins_over_max_tokens(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=9, max_completion_tokens=3, temperature=0
    )
    assert response.usage is not None and response.usage.completion_tokens == 3


def test_a_text_prompt_and_its_token_ids_complete_alike(
    client: openai.OpenAI, tokenizer: Any
) -> None:
    def complete(prompt: str | list[int]) -> openai.types.Completion:
        return client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, seed=7)

    by_text, by_ids = complete("The cat"), complete(tokenizer.encode("The cat"))
    assert by_text.choices[0].text == by_ids.choices[0].text
    assert by_text.usage == by_ids.usage
    assert by_text.usage is not None and by_text.usage.completion_tokens == 5
    assert by_text.choices[0].finish_reason == "length"


def test_the_same_seed_gives_the_same_text(client: openai.OpenAI) -> None:
    def sample() -> str | None:
        response = client.completions.create(
            model=MODEL, prompt="Once upon", max_tokens=8, temperature=1.0, seed=1234
        )
        return response.choices[0].text

    assert sample() == sample()


def test_streamed_chat_joins_to_the_whole_answer(client: openai.OpenAI) -> None:
    options = {"model": MODEL, "messages": HELLO, "max_tokens": 12, "temperature": 0}
    whole = client.chat.completions.create(**options).choices[0].message  # type: ignore[call-overload]
    stream = client.chat.completions.create(
        **options, stream=True, stream_options={"include_usage": True}
    )  # type: ignore[call-overload]
    reasoning, content, finish, usage = "", "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert reasoning == (whole.model_extra or {}).get("reasoning_content")
    assert content == (whole.content or "")
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 12


def test_a_stop_string_ends_the_text_before_it(client: openai.OpenAI) -> None:
    options = {"model": MODEL, "prompt": "The", "max_tokens": 16, "temperature": 0}
    free = client.completions.create(**options).choices[0].text  # type: ignore[call-overload]
    stop = free[3:6]
    stopped = client.completions.create(**options, stop=[stop])  # type: ignore[call-overload]
    assert stopped.choices[0].text == free[: free.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(
            lambda c: c.chat.completions.create(model="gpt-4o", messages=HELLO),
            openai.NotFoundError,
            id="an unknown model is a 404",
        ),
        pytest.param(
            lambda c: c.chat.completions.create(model=MODEL, messages=HELLO, n=2),
            openai.BadRequestError,
            id="n other than 1 is a 400",
        ),
        pytest.param(
            lambda c: c.chat.completions.create(model=MODEL, messages=[]),
            openai.BadRequestError,
            id="no messages is a 400",
        ),
        pytest.param(
            lambda c: c.completions.create(model=MODEL, prompt="word " * 600, max_tokens=1),
            openai.BadRequestError,
            id="a prompt longer than the context is a 400",
        ),
        pytest.param(
            lambda c: c.completions.create(model=MODEL, prompt=[10**6], max_tokens=1),
            openai.BadRequestError,
            id="a token id outside the vocabulary is a 400",
        ),
    ],
)
def test_errors_arrive_as_the_clients_exception_classes(
    client: openai.OpenAI, call: object, error: type[openai.APIStatusError]
) -> None:
    with pytest.raises(error) as raised:
        call(client)  # type: ignore[operator]
    body = raised.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}


def test_a_wrong_key_is_an_authentication_error(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_n_is_named_as_the_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=MODEL, prompt="x", n=3)
    assert raised.value.param == "n"  # type: ignore[attr-defined]
