"""A small HTTP client on the standard library: bearer token for one host only, ranged
GETs, and HTTP errors turned into one-line FetchErrors a user can act on."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from r1_runtime.fetch.errors import FetchError, HttpStatusError, RetryableError

USER_AGENT = "r1-runtime-fetch/0.1"
TIMEOUT_S = 60.0
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

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
    """GETs with `Authorization: Bearer <token>` sent to `auth_host` only."""

    def __init__(self, *, token: str | None, auth_host: str, explain: Explain) -> None:
        self._token = token
        self._auth_host = auth_host
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

    def open(self, url: str, offset: int = 0) -> Response:
        """GET `url` from byte `offset`. The server may ignore the range and answer 200."""
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if self._token and urllib.parse.urlsplit(url).netloc == self._auth_host:
            request.add_header("Authorization", f"Bearer {self._token}")
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            body = self._opener.open(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as error:
            raise self._http_error(error, url) from None
        except urllib.error.URLError as error:
            raise RetryableError(f"cannot reach {_origin(url)}: {error.reason}") from None
        except TRANSIENT_ERRORS as error:
            raise RetryableError(f"{_origin(url)}: {error!r}") from None
        return _response(body, offset)

    def _http_error(self, error: urllib.error.HTTPError, url: str) -> FetchError:
        code = error.headers.get("X-Error-Code", "") if error.headers else ""
        message = error.headers.get("X-Error-Message", "") if error.headers else ""
        error.close()
        if error.code in RETRYABLE_STATUS:
            return RetryableError(f"HTTP {error.code} from {_origin(url)}")
        said = ": ".join(part for part in (code, message) if part)
        detail = f" ({said})" if said else ""
        explained = self._explain(error.code, url, code)
        return HttpStatusError(f"HTTP {error.code}{detail}: {explained}", error.code)


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
