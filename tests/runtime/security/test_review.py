"""What one request's audit entry says about who sent it: a short hash of the key, never the
key; the client certificate's subject; the prompt only when the settings ask for it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from r1_runtime.security.settings import parse_security
from r1_runtime.server.errors import APIError
from r1_runtime.server.review import CLIENT_CERT_SUBJECT, Review, cert_subject, key_id

PEERCERT = {
    "subject": ((("organizationName", "Acme"),), (("commonName", "batch-client"),)),
    "issuer": ((("commonName", "ca"),),),
}


def scope(**headers: str) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/v1/completions",
        "client": ("10.0.0.7", 51234),
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
        "state": {CLIENT_CERT_SUBJECT: cert_subject(PEERCERT)},
    }


def test_the_key_is_recorded_as_a_short_hash() -> None:
    expected = hashlib.sha256(b"s3cret-key").hexdigest()[:16]
    assert key_id(b"Bearer s3cret-key") == key_id(b"bearer  s3cret-key ") == expected
    assert key_id(None) is None and key_id(b"Basic abc") is None


def test_the_client_certificate_subject() -> None:
    assert cert_subject(PEERCERT) == "O=Acme,CN=batch-client"
    assert cert_subject(None) is None and cert_subject({}) is None


@pytest.mark.parametrize("include_prompts", [False, True])
def test_the_prompt_is_recorded_only_when_asked_for(include_prompts: bool) -> None:
    security = parse_security({"audit": {"enabled": True, "includePrompts": include_prompts}})
    review = Review(security)
    review.screen("the prompt text")
    entry = review.entry(scope(authorization="Bearer s3cret-key"), 200, 0.25)
    assert ("prompt" in entry) is include_prompts
    assert entry.get("prompt", "the prompt text") == "the prompt text"
    assert entry.get("completion") is None  # no generation: refused before the engine
    assert entry["key_id"] == key_id(b"Bearer s3cret-key")
    assert entry["client_cert"] == "O=Acme,CN=batch-client"
    assert (entry["client"], entry["status"], entry["duration_ms"]) == ("10.0.0.7", 200, 250)
    assert "s3cret-key" not in str(entry)


def test_a_blocked_prompt_is_counted_and_becomes_a_400() -> None:
    review = Review(parse_security({"inputFilter": {"denyPatterns": ["forbidden"]}}))
    with pytest.raises(APIError) as raised:
        review.screen("a forbidden word")
    assert (raised.value.status_code, raised.value.code) == (400, "content_blocked")
    assert review.entry(scope(), 400, 0.0)["blocked"] == 1


def test_the_completion_is_recorded_as_the_client_got_it(demo_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    security = parse_security(
        {
            "outputRedaction": {"patterns": [{"name": "id", "regex": "EMP-[0-9]{6}"}]},
            "audit": {"enabled": True, "includePrompts": True},
        }
    )
    review = Review(security)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    text = review.output_text(tokenizer, [], split_reasoning=True)
    token_ids = tokenizer.encode("think EMP-123456</think>\n\nanswer", add_special_tokens=False)
    for token_id in token_ids:
        text.push([token_id])
    text.finish()
    entry = review.entry(scope(), 200, 1.0)
    assert (entry["reasoning"], entry["completion"]) == ("think [REDACTED:id]", "\n\nanswer")
    assert entry["redacted"] == 1
