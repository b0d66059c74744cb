"""Every error leaves through one handler, in OpenAI's shape:
`{"error": {"message", "type", "param", "code"}}` with the matching HTTP status."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger(__name__)

# OpenAI's error `type` for each status this server answers with.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]*")
TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


class APIError(HTTPException):
    """An error for the client. A starlette `HTTPException`, so FastAPI passes it through
    unchanged even when it is raised while the request body is read."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, message, headers)
        self.message = message
        self.param = param
        self.code = code


def install_error_handler(app: FastAPI) -> None:
    """Route every exception (ours, FastAPI's validation errors, starlette's 404/405, and any
    unexpected one as a 500) through `_handle`."""
    for kind in (HTTPException, RequestValidationError, Exception):
        app.add_exception_handler(kind, _handle)


async def _handle(request: Request, error: Exception) -> JSONResponse:
    api_error = to_api_error(error)
    return JSONResponse(
        {"error": error_body(api_error)},
        status_code=api_error.status_code,
        headers=api_error.headers,
    )


def error_body(error: APIError) -> dict[str, str | None]:
    """The inner object of an OpenAI error response (also sent as an SSE event mid-stream)."""
    return {
        "message": error.message,
        "type": ERROR_TYPES.get(error.status_code, "invalid_request_error"),
        "param": error.param,
        "code": error.code,
    }


def to_api_error(error: Exception) -> APIError:
    """The client-facing form of any exception; unexpected ones are logged and become a 500."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, RequestValidationError):
        return _from_validation(error)
    if isinstance(error, HTTPException):
        message = error.detail if isinstance(error.detail, str) else HTTPStatus(error.status_code)
        headers = dict(error.headers) if error.headers else None
        return APIError(error.status_code, str(message), headers=headers)
    logger.exception("unexpected error", exc_info=error)
    return APIError(500, "internal server error", code="internal_error")


def _from_validation(error: RequestValidationError) -> APIError:
    """The first validation problem, with the offending field as `param` (a dotted path)."""
    first = error.errors()[0]
    if first.get("type") == "json_invalid":
        return APIError(400, "the request body is not valid JSON", code="invalid_json")
    param = ".".join(_field_path(first.get("loc", ()))) or None
    message = str(first.get("msg", "invalid request"))
    return APIError(400, f"{param}: {message}" if param else message, param=param)


def _field_path(location: tuple[int | str, ...]) -> list[str]:
    """Field names and list indexes of a pydantic location, without `body` and without the
    union members pydantic names in it (`str`, `constrained-str`, `list[int]`, ...)."""
    parts = location[1:] if location[:1] == ("body",) else location
    return [
        str(part)
        for part in parts
        if isinstance(part, int) or (FIELD_NAME.fullmatch(part) and part not in TYPE_NAMES)
    ]
