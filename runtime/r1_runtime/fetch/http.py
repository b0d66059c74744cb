"""A small HTTP client on the standard library: credentials for one host only (a bearer
token, or an `Auth` that signs each request), ranged GETs, and HTTP errors turned into
one-line FetchErrors a user can act on."""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import Any, Protocol

from r1_runtime.fetch.errors import FetchError, HttpStatusError, RetryableError

USER_AGENT = "r1-runtime-fetch/0.1"
TIMEOUT_S = 60.0
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
ERROR_BODY_BYTES = 16384

# Turns an HTTP status (401, 403, 404) into the hint the source knows: which variable or
# Secret to fix. Takes the status, the URL and the hub's X-Error-Code/-Message if any.
Explain = Callable[[int, str, str], str]

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    socket.timeout,
    http.client.IncompleteRead,
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ssl.SSLError,  # e.g. an EOF in the middle of a TLS record
)


@dataclass(frozen=True)
class Response:
    """An open response: `status` 200 (whole file) or 206 (from `offset`), and the body."""

    status: int
    offset: int
    body: http.client.HTTPResponse


class Auth(Protocol):
    """Credentials a source adds to its own requests."""

    def apply(self, request: urllib.request.Request) -> None:
        """Add headers to `request` (every other header already set): a token, a signature."""

    def renew(self, challenge: str) -> bool:
        """After a 401 with `WWW-Authenticate: challenge`: True when new credentials were
        obtained (a registry's bearer token) and the request is worth sending once more."""


@dataclass(frozen=True)
class BearerAuth:
    """`Authorization: Bearer <token>` on requests to `host` only."""

    token: str | None
    host: str

    def apply(self, request: urllib.request.Request) -> None:
        if self.token and urllib.parse.urlsplit(request.full_url).netloc == self.host:
            request.add_header("Authorization", f"Bearer {self.token}")

    def renew(self, challenge: str) -> bool:
        return False


class _NoTokenElsewhere(urllib.request.HTTPRedirectHandler):
    """Follows redirects (the hub sends LFS files to a CDN) without carrying the token to
    another host: the CDN URL is signed, and the token must not leak to it."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != req.host:
            for name in [key for key in new.headers if key.lower() == "authorization"]:
                del new.headers[name]
        return new


class HttpClient:
    """GETs with `Authorization: Bearer <token>` sent to `auth_host` only, or with what
    `auth` adds to each request."""

    def __init__(
        self,
        *,
        explain: Explain,
        token: str | None = None,
        auth_host: str = "",
        auth: Auth | None = None,
    ) -> None:
        self._auth = auth or BearerAuth(token, auth_host)
        self._explain = explain
        self._opener = urllib.request.build_opener(_NoTokenElsewhere())

    def get_json(self, url: str) -> Any:
        """The JSON body at `url`; a FetchError if it is not JSON."""
        with self.open(url).body as body:
            data = body.read()
        try:
            return json.loads(data)
        except ValueError as error:
            raise FetchError(f"{url} did not answer JSON ({error}); check the source") from None

    def get_bytes(self, url: str) -> bytes:
        with self.open(url).body as body:
            return bytes(body.read())

    def head(self, url: str, headers: dict[str, str] | None = None) -> Message:
        """The headers a HEAD request for `url` answers."""
        with self.open(url, headers=headers, method="HEAD").body as body:
            return body.headers

    def open(
        self,
        url: str,
        offset: int = 0,
        *,
        headers: dict[str, str] | None = None,
        method: str = "GET",
    ) -> Response:
        """GET `url` from byte `offset`. The server may ignore the range and answer 200.
        A 401 the `auth` can answer (new credentials) is sent once more."""
        for attempt in (1, 2):
            request = urllib.request.Request(url, headers=headers or {}, method=method)
            request.add_header("User-Agent", USER_AGENT)
            if offset:
                request.add_header("Range", f"bytes={offset}-")
            self._auth.apply(request)
            try:
                body = self._opener.open(request, timeout=TIMEOUT_S)
            except urllib.error.HTTPError as error:
                challenge = error.headers.get("WWW-Authenticate", "") if error.headers else ""
                if error.code == 401 and attempt == 1 and self._auth.renew(challenge):
                    error.close()
                    continue
                raise self._http_error(error, url) from None
            except urllib.error.URLError as error:
                raise RetryableError(f"cannot reach {_origin(url)}: {error.reason}") from None
            except TRANSIENT_ERRORS as error:
                raise RetryableError(f"{_origin(url)}: {error!r}") from None
            return _response(body, offset)
        raise AssertionError("unreachable")

    def _http_error(self, error: urllib.error.HTTPError, url: str) -> FetchError:
        code = error.headers.get("X-Error-Code", "") if error.headers else ""
        message = error.headers.get("X-Error-Message", "") if error.headers else ""
        if not code:
            code, message = _error_in_body(error, message)
        error.close()
        if error.code in RETRYABLE_STATUS:
            return RetryableError(f"HTTP {error.code} from {_origin(url)}")
        said = ": ".join(part for part in (code, message) if part)
        detail = f" ({said})" if said else ""
        explained = self._explain(error.code, url, code)
        return HttpStatusError(f"HTTP {error.code}{detail}: {explained}", error.code, code)


def _error_in_body(error: urllib.error.HTTPError, message: str) -> tuple[str, str]:
    """The error code and message an object store (S3 XML `<Code>`, `<Message>`) or a
    registry (JSON `{"errors": [{"code", "message"}]}`) puts in the body."""
    try:
        text = error.read(ERROR_BODY_BYTES).decode(errors="replace")
    except (OSError, AttributeError, http.client.HTTPException):  # no body: fp is None
        return "", message
    xml_code = re.search(r"<Code>([^<]{1,100})</Code>", text)
    if xml_code:
        xml_message = re.search(r"<Message>([^<]{1,300})</Message>", text)
        return xml_code[1], xml_message[1] if xml_message else message
    try:
        first = json.loads(text)["errors"][0]
        return str(first["code"]), str(first.get("message") or message)
    except (ValueError, KeyError, IndexError, TypeError):
        return "", message


def _response(body: http.client.HTTPResponse, offset: int) -> Response:
    status = body.status
    if status == 206:
        start = _range_start(body.headers.get("Content-Range", ""))
        if start != offset:
            body.close()
            raise RetryableError(f"asked for bytes from {offset}, got Content-Range from {start}")
    return Response(status=status, offset=offset if status == 206 else 0, body=body)


def _range_start(content_range: str) -> int | None:
    """The first byte of `Content-Range: bytes START-END/SIZE`, or None."""
    unit, _, spec = content_range.partition(" ")
    start = spec.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
