"""Requests to engine inputs: prompt token ids (chat template or raw prompt) within the
context, and `SamplingParams` within the room the prompt leaves."""

from __future__ import annotations

from collections.abc import Callable

from r1_runtime.engine.llm_engine import InvalidRequestError, PromptTooLongError
from r1_runtime.engine.sequence import SamplingParams
from r1_runtime.server.errors import APIError
from r1_runtime.server.model import LoadedModel
from r1_runtime.server.protocol import ChatMessage, SamplingRequest

GREEDY_BELOW = 1e-5  # vLLM's: a smaller temperature samples greedily (and divides safely)

Screen = Callable[[str], None]  # sees the prompt text before it is tokenized; raises to refuse


def chat_prompt(
    model: LoadedModel, messages: list[ChatMessage], screen: Screen | None = None
) -> list[int]:
    """The conversation rendered with the tokenizer's chat template, ready for the answer;
    `screen` sees the rendered text."""
    conversation = [
        {"role": message.role, "content": message.text}
        | ({"name": message.name} if message.name else {})
        for message in messages
    ]
    try:
        text = model.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
    except Exception as error:  # the template's own checks raise anything jinja2 can
        raise APIError(
            400, f"messages do not fit the model's chat template: {error}", param="messages"
        ) from error
    if screen is not None:
        screen(text)
    token_ids: list[int] = model.tokenizer.encode(text, add_special_tokens=False)
    _check(model, token_ids, "messages")
    return token_ids


def completion_prompt(
    model: LoadedModel, prompt: str | list[int], screen: Screen | None = None
) -> list[int]:
    """A text prompt tokenized as the tokenizer does by default (BOS included), or token ids
    (checked before they are decoded for `screen`); `screen` sees the text."""
    if isinstance(prompt, str):
        if screen is not None:
            screen(prompt)
        token_ids: list[int] = model.tokenizer.encode(prompt)
        _check(model, token_ids, "prompt")
        return token_ids
    _check(model, prompt, "prompt")
    if screen is not None:
        screen(model.tokenizer.decode(prompt))
    return prompt


def sampling_params(
    model: LoadedModel, body: SamplingRequest, max_tokens: int | None
) -> SamplingParams:
    """The engine's parameters for a request; `max_tokens` None means all the room left (the
    engine caps any `max_tokens` to the room the prompt leaves)."""
    temperature = 1.0 if body.temperature is None else body.temperature
    return SamplingParams(
        temperature=0.0 if temperature < GREEDY_BELOW else temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k if body.top_k and body.top_k > 0 else None,
        seed=body.seed,
        max_tokens=max_tokens or model.max_model_len,
        ignore_eos=body.ignore_eos,
        max_reasoning_tokens=body.max_reasoning_tokens,
        think_end_token_id=_think_end_token_id(model, body.max_reasoning_tokens),
    )


def _think_end_token_id(model: LoadedModel, max_reasoning_tokens: int | None) -> int | None:
    """The token a thinking budget forces; None without a budget."""
    if max_reasoning_tokens is None:
        return None
    if model.think_end_token_id is None:
        raise APIError(
            400,
            "max_reasoning_tokens: this model has no </think> token",
            param="max_reasoning_tokens",
        )
    return model.think_end_token_id


def _check(model: LoadedModel, token_ids: list[int], param: str) -> None:
    """The engine's own check (`LLMEngine.check_prompt`), as a 400 naming `param`."""
    try:
        model.engine.check_prompt(token_ids)
    except InvalidRequestError as error:
        code = "context_length_exceeded" if isinstance(error, PromptTooLongError) else None
        raise APIError(400, f"{param}: {error}", param=param, code=code) from error
