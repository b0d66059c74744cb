"""The FastAPI app: routes, the one error handler, the request size limit, and a lifespan
that loads the model in a worker thread (so /health answers while it loads) and stops the
engine thread at shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from r1_runtime.config import ConfigError, RuntimeConfig
from r1_runtime.security.audit import AuditLog, audit_path
from r1_runtime.server.errors import APIError, install_error_handler
from r1_runtime.server.model import LoadedModel, Loader
from r1_runtime.server.review import RequestReview
from r1_runtime.server.routes import openai, operations
from r1_runtime.server.state import ServerState

logger = logging.getLogger(__name__)


def create_app(config: RuntimeConfig, loader: Loader) -> FastAPI:
    """The app for `config`; `loader` runs at start-up in a worker thread. `app.state.server`
    is the `ServerState` the routes share."""
    state = ServerState(config)
    app = FastAPI(
        title="r1-runtime",
        summary="OpenAI-compatible API for DeepSeek-R1 and its distills",
        lifespan=partial(_lifespan, state, partial(loader, state.set_startup_phase)),
    )
    app.state.server = state
    install_error_handler(app)
    app.include_router(operations)
    app.include_router(openai)
    app.add_middleware(BodySizeLimit, max_bytes=config.max_request_bytes)
    app.state.audit_log = _audit_log(config)
    app.add_middleware(RequestReview, security=config.settings.security, audit=app.state.audit_log)
    return app


def _audit_log(config: RuntimeConfig) -> AuditLog | None:
    """The audit log when settings.json turns it on (config checks that --log-dir is set)."""
    if not config.settings.security.audit.enabled or config.log_dir is None:
        return None
    path = audit_path(config.log_dir, os.environ.get("HOSTNAME"))
    try:
        return AuditLog(path)
    except OSError as error:
        raise ConfigError(
            f"--log-dir {config.log_dir}: cannot write the audit log {path}: {error.strerror}; "
            "mount a writable volume there (the cold tier) or turn security.audit.enabled off"
        ) from error


@asynccontextmanager
async def _lifespan(
    state: ServerState, loader: Callable[[], LoadedModel], app: FastAPI
) -> AsyncIterator[None]:
    loading = asyncio.create_task(_load(state, loader))
    try:
        yield
    finally:
        await loading  # NOTE: a load in progress cannot be interrupted; shutdown waits for it
        if state.model is not None:
            await asyncio.to_thread(state.model.engine.shutdown)
        audit: AuditLog | None = app.state.audit_log
        if audit is not None:
            await asyncio.to_thread(audit.close)  # writes what is queued


async def _load(state: ServerState, loader: Callable[[], LoadedModel]) -> None:
    try:
        state.model = await asyncio.to_thread(loader)
    except Exception as error:
        logger.exception("loading the model failed")
        state.load_error = error
    else:
        logger.info("ready: serving %r", state.config.served_model_name)


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with a 413, by declared length or as they
    stream in. The error is raised from `receive`, inside the route, so it leaves through
    the one error handler like every other."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise self._too_large()
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> APIError:
        return APIError(
            413, f"the request body is over {self.max_bytes} bytes", code="request_too_large"
        )
