"""Request fields to engine parameters, without a server: defaults, caps and extensions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from r1_runtime.server.errors import APIError
from r1_runtime.server.prompts import sampling_params
from r1_runtime.server.protocol import CompletionRequest

REASONING_MODEL = SimpleNamespace(max_model_len=100, think_end_token_id=7)
PLAIN_MODEL = SimpleNamespace(max_model_len=100, think_end_token_id=None)


def params_for(model: Any = REASONING_MODEL, max_tokens: int | None = 16, **fields: Any) -> Any:
    body = CompletionRequest(model="m", prompt="p", **fields)
    return sampling_params(model, body, max_tokens=max_tokens)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, {"temperature": 1.0, "top_p": 1.0, "top_k": None}, id="OpenAI defaults"),
        pytest.param(
            {"temperature": 1e-9}, {"temperature": 0.0}, id="a tiny temperature is greedy"
        ),
        pytest.param({"top_k": -1}, {"top_k": None}, id="top_k -1 is no limit"),
        pytest.param({"top_k": 0}, {"top_k": None}, id="top_k 0 is no limit"),
        pytest.param({"ignore_eos": True}, {"ignore_eos": True}, id="ignore_eos passes through"),
        pytest.param(
            {"max_reasoning_tokens": 5},
            {"max_reasoning_tokens": 5, "think_end_token_id": 7},
            id="a thinking budget closes with the model's </think>",
        ),
    ],
)
def test_request_fields_become_sampling_params(
    fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    params = params_for(**fields)
    assert {name: getattr(params, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("max_tokens", "expected"),
    [
        # NOTE: the engine caps either at the room the prompt leaves (test_engine.py)
        pytest.param(None, 100, id="no limit asks for the whole context"),
        pytest.param(8, 8, id="a limit is kept"),
    ],
)
def test_max_tokens_passes_to_the_engine(max_tokens: int | None, expected: int) -> None:
    assert params_for(max_tokens=max_tokens).max_tokens == expected


def test_a_thinking_budget_needs_a_reasoning_model() -> None:
    with pytest.raises(APIError) as raised:
        params_for(PLAIN_MODEL, max_reasoning_tokens=3)
    assert (raised.value.status_code, raised.value.param) == (400, "max_reasoning_tokens")
