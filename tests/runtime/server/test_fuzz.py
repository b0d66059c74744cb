"""A property pass over the request schema: bodies mixing valid and wrong values, fields
missing and unknown, never get a 500; every error is in OpenAI's shape."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import MODEL

pytestmark = pytest.mark.slow

ANYTHING = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
# Never a valid large count: a body that passes validation must finish in a few tokens.
NOT_A_COUNT = (
    st.text(max_size=3) | st.integers(max_value=0) | st.floats(0.1, 9).filter(lambda x: x % 1)
)
SAMPLING = {
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.01, 1),
    "top_k": st.integers(-1, 50),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "stop": st.text(min_size=1, max_size=3) | st.lists(st.text(min_size=1, max_size=3), max_size=3),
    "n": st.just(1),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "max_reasoning_tokens": st.integers(0, 3),
    "user": st.text(max_size=5),
}
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant"]),
        "content": st.text(max_size=30)
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=9)})),
    }
)
PROMPT = (
    st.text(max_size=30)
    | st.lists(st.integers(0, 2000), min_size=1, max_size=4)
    | st.lists(st.text(max_size=9), min_size=1, max_size=1)
)


def bodies(required: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body, then up to two fields replaced by anything at all (or removed)."""
    valid = st.fixed_dictionaries(
        {"model": st.just(MODEL), "max_tokens": st.integers(1, 3), **required}, optional=SAMPLING
    )
    names = st.sampled_from([*SAMPLING, *required, "model", "unknown_field"])
    wrong = st.dictionaries(names, ANYTHING, max_size=2) | st.fixed_dictionaries(
        {"max_tokens": NOT_A_COUNT}
    )
    removed = st.sets(st.sampled_from(["model", *required]), max_size=1)
    return st.builds(
        lambda body, changes, gone: {
            key: value for key, value in (body | changes).items() if key not in gone
        },
        valid,
        wrong,
        removed,
    )


CHAT = bodies({"messages": st.lists(MESSAGE, min_size=1, max_size=3)})
COMPLETION = bodies({"prompt": PROMPT})


def check(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    data = json.dumps(body, allow_nan=True)
    response = http.post(path, content=data, headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.endswith("data: [DONE]\n\n")
    else:
        assert response.json()["usage"]["completion_tokens"] <= 3


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(body=CHAT)
def test_chat_bodies_never_cause_a_500(http: httpx.Client, body: dict[str, Any]) -> None:
    check(http, "/v1/chat/completions", body)


@FUZZ
@given(body=COMPLETION)
def test_completion_bodies_never_cause_a_500(http: httpx.Client, body: dict[str, Any]) -> None:
    check(http, "/v1/completions", body)
