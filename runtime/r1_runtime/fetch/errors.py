"""The two ways `r1-runtime fetch` fails: a bad flag (exit 2) or a failed fetch (exit 1)."""

from __future__ import annotations


class FetchError(Exception):
    """The fetch failed; the message is one line that says what to check or change."""

    exit_code = 1


class UsageError(FetchError):
    """A flag the fetcher cannot honour; the message names the flag and what is supported."""

    exit_code = 2


class RetryableError(FetchError):
    """A transient failure (connection dropped, 5xx, 429): the download retries and resumes."""


class HttpStatusError(FetchError):
    """The server answered an HTTP error status that retrying does not fix; `code` is the
    error code it gave (X-Error-Code, an S3 `<Code>`, a registry's `errors[0].code`)."""

    def __init__(self, message: str, status: int, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
