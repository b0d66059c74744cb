"""The security profile applied to each API request: its prompt screened by the input filter,
its output redacted (by the `OutputText` that `Review.output_text` makes), and one audit line
written when its response is done."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from r1_runtime.security.audit import AuditLog
from r1_runtime.security.input_filter import PromptBlocked
from r1_runtime.security.settings import SecuritySettings
from r1_runtime.server.errors import APIError
from r1_runtime.server.generation import OutputText
from r1_runtime.server.reasoning import TextDelta

REVIEW_STATE = "review"
CLIENT_CERT_SUBJECT = "client_cert_subject"  # set per connection by serve.ClientCertProtocol
KEY_ID_CHARS = 16


class Observed(Protocol):
    """What the audit reads from a generation once it is done."""

    num_prompt_tokens: int
    num_completion_tokens: int
    finish_reason: str | None


@dataclass
class Review:
    """One request's screening and audit record; the routes fill it in as they go."""

    security: SecuritySettings
    request_id: str = field(default_factory=lambda: f"req-{uuid.uuid4().hex}")
    model: str | None = None
    prompt: str | None = None
    is_blocked: bool = False
    generation: Observed | None = None
    text: OutputText | None = None

    def output_text(self, tokenizer: Any, stops: list[str], split_reasoning: bool) -> OutputText:
        """The request's text pipeline, with the redaction rules; it keeps the output for the
        audit when prompts (and so completions) go into it."""
        self.text = OutputText(
            tokenizer,
            stops,
            split_reasoning,
            self.security.redaction_rules,
            keep_text=self.security.audit.enabled and self.security.audit.include_prompts,
        )
        return self.text

    @property
    def needs_prompt(self) -> bool:
        """Whether `screen` wants the prompt text (a token-id prompt is decoded for it)."""
        return self.security.input_filter.is_enabled or self.security.audit.include_prompts

    def screen(self, prompt: str) -> None:
        """Apply the input filter to the prompt text; a 400 if it is refused."""
        if self.security.audit.include_prompts:
            self.prompt = prompt
        try:
            self.security.input_filter.check(prompt)
        except PromptBlocked as error:
            self.is_blocked = True
            raise APIError(400, str(error), code=error.code) from None

    def entry(self, scope: Scope, status: int, seconds: float) -> dict[str, Any]:
        """The audit entry: who, when, what, how it ended; prompt and completion only if asked
        for (the completion as the client got it: redacted)."""
        generation = self.generation
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": self.request_id,
            "key_id": key_id(_header(scope, b"authorization")),
            "client_cert": scope.get("state", {}).get(CLIENT_CERT_SUBJECT),
            "client": (scope.get("client") or (None,))[0],
            "method": scope["method"],
            "endpoint": scope["path"],
            "model": self.model,
            "status": status,
            "prompt_tokens": generation.num_prompt_tokens if generation else None,
            "completion_tokens": generation.num_completion_tokens if generation else None,
            "finish_reason": generation.finish_reason if generation else None,
            "blocked": int(self.is_blocked),
            "redacted": self.text.num_redactions if self.text else 0,
            "duration_ms": round(seconds * 1000),
        }
        if self.security.audit.include_prompts:
            output = (self.text.kept_text if self.text else None) or TextDelta()
            entry["prompt"] = self.prompt
            entry["completion"] = output.content if self.text else None
            entry["reasoning"] = output.reasoning or None
        return entry


def key_id(authorization: bytes | None) -> str | None:
    """A short sha256 of the bearer token: tells keys apart in the log, never shows one."""
    scheme, _, token = (authorization or b"").partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return hashlib.sha256(token.strip()).hexdigest()[:KEY_ID_CHARS]


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value, as starlette's `request.headers.get` (and so `authorize`) reads it."""
    return next((value for key, value in scope["headers"] if key == name), None)


def cert_subject(peercert: dict[str, Any] | None) -> str | None:
    """`CN=...,O=...` from `ssl.SSLSocket.getpeercert()`'s subject; None without a certificate."""
    if not peercert:
        return None
    pairs = [pair for rdn in peercert.get("subject", ()) for pair in rdn]
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}
    return ",".join(f"{short.get(name, name)}={value}" for name, value in pairs) or None


def request_review(request: Request) -> Review:
    """The route dependency: the `Review` that `RequestReview` made for this request."""
    review: Review = getattr(request.state, REVIEW_STATE)
    return review


class RequestReview:
    """ASGI middleware around `/v1/`: gives each request a `Review` and, once the response is
    done (a stream's last byte sent, its generation closed), hands its entry to the audit
    log, if there is one."""

    def __init__(self, app: ASGIApp, security: SecuritySettings, audit: AuditLog | None) -> None:
        self.app = app
        self.security = security
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        review = Review(self.security)
        scope.setdefault("state", {})[REVIEW_STATE] = review
        status = 500  # NOTE: an exception no handler turned into a response becomes a 500
        started = time.monotonic()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if self.audit is not None:
                self.audit.record(review.entry(scope, status, time.monotonic() - started))
