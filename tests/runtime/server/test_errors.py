"""Every error status as raw HTTP: OpenAI's error shape from the one handler, the right
status, the offending field named as `param`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .harness import API_KEY, MODEL, RunningServer

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hi"}]


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return dict(body["error"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"model": MODEL}, "messages", id="a missing field"),
        pytest.param({"model": MODEL, "messages": "hi"}, "messages", id="a wrong type"),
        pytest.param(
            {"model": MODEL, "messages": HELLO, "temperature": "hot"},
            "temperature",
            id="a string for a number",
        ),
        pytest.param(
            {"model": MODEL, "messages": HELLO, "temperature": 3}, "temperature", id="out of range"
        ),
        pytest.param(
            {"model": MODEL, "messages": HELLO, "max_tokens": 0}, "max_tokens", id="zero tokens"
        ),
        pytest.param(
            {"model": MODEL, "messages": HELLO, "seed": 2**70}, "seed", id="a seed beyond int64"
        ),
        pytest.param({"model": MODEL, "messages": HELLO, "stop": [""]}, "stop", id="empty stop"),
        pytest.param(
            {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
            "messages.0.role",
            id="an unknown role",
        ),
        pytest.param(
            {"model": MODEL, "messages": [{"role": "user", "content": None}]},
            "messages",
            id="a message the chat template cannot render",
        ),
    ],
)
def test_an_invalid_body_is_a_400_naming_the_field(
    http: httpx.Client, body: dict[str, Any], param: str
) -> None:
    error = assert_openai_error(http.post(CHAT, json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_unknown_fields_are_ignored(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 1, "logit_bias": {}, "x-new": 1}
    assert http.post(CHAT, json=body).status_code == 200


def test_malformed_json_is_a_400(http: httpx.Client) -> None:
    response = http.post(CHAT, content=b"{not json", headers={"content-type": "application/json"})
    assert assert_openai_error(response, 400)["code"] == "invalid_json"


def test_a_prompt_longer_than_the_context_is_a_400(http: httpx.Client) -> None:
    long = [{"role": "user", "content": "word " * 600}]
    response = http.post(CHAT, json={"model": MODEL, "messages": long, "max_tokens": 1})
    assert assert_openai_error(response, 400)["code"] == "context_length_exceeded"


def test_an_unknown_model_is_a_404(http: httpx.Client) -> None:
    response = http.post(CHAT, json={"model": "gpt-4", "messages": HELLO})
    assert assert_openai_error(response, 404)["code"] == "model_not_found"


def test_an_unknown_route_is_a_404_in_the_same_shape(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/embeddings"), 404)


def test_a_body_over_the_limit_is_a_413(http: httpx.Client) -> None:
    huge = json.dumps({"model": MODEL, "messages": HELLO, "pad": "x" * (1 << 20)})
    response = http.post(CHAT, content=huge, headers={"content-type": "application/json"})
    assert_openai_error(response, 413)


def test_a_chunked_body_over_the_limit_is_a_413(http: httpx.Client) -> None:
    def body() -> Any:
        yield b'{"model": "x", "pad": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = http.post(CHAT, content=body(), headers={"content-type": "application/json"})
    assert_openai_error(response, 413)


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no header"),
        pytest.param("Bearer wrong", id="a wrong key"),
        pytest.param(f"Basic {API_KEY}", id="another scheme"),
        pytest.param(f"Bearer {API_KEY}x", id="a key with a suffix"),
    ],
)
def test_api_routes_need_a_valid_key(server: RunningServer, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{server.base_url}/v1/models", headers=headers)
    error = assert_openai_error(response, 401)
    assert error["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_operations_routes_need_no_key(server: RunningServer, path: str) -> None:
    assert httpx.get(f"{server.base_url}{path}").status_code == 200


def test_the_key_file_is_read_again_when_it_changes(
    server: RunningServer, api_key_file: Any
) -> None:
    original = api_key_file.read_text()
    url = f"{server.base_url}/v1/models"
    try:
        api_key_file.write_text(original + "rotated-key\n")
        assert httpx.get(url, headers={"Authorization": "Bearer rotated-key"}).status_code == 200
        api_key_file.write_text("rotated-key\n")
        assert httpx.get(url, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 401
    finally:
        api_key_file.write_text(original)
    assert httpx.get(url, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_the_openapi_document_describes_the_routes(server: RunningServer) -> None:
    paths = httpx.get(f"{server.base_url}/openapi.json").json()["paths"]
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/ready"} <= set(paths)
