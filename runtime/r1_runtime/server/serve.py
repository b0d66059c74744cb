"""Running the server: uvicorn with our TLS context, and a SIGTERM that drains.

On the first SIGTERM (or SIGINT) the server keeps listening but admits nothing new (`/ready`
and new API requests answer 503, so the Service stops routing here), lets running requests
finish for up to `--drain-timeout` seconds, aborts what is left, then exits 0. A second
signal exits at once, as uvicorn does.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from r1_runtime.config import RuntimeConfig
from r1_runtime.logs import configure_logging
from r1_runtime.server.app import create_app
from r1_runtime.server.model import Loader
from r1_runtime.server.review import CLIENT_CERT_SUBJECT, cert_subject
from r1_runtime.server.routes import CLIENT_CERT_STATE
from r1_runtime.server.state import ServerState

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 5  # after the drain: for the last response bytes to go out


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first exit signal starts a drain instead of stopping."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.state.is_draining or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
            return
        logger.info("signal %d: draining (at most %.0f s)", sig, self.state.config.drain_timeout)
        self.state.begin_drain()

    async def on_tick(self, counter: int) -> bool:
        state = self.state
        if state.load_error is not None or state.engine_failure is not None or state.is_drained():
            self.should_exit = True
        return await super().on_tick(counter)


class ClientCertProtocol(H11Protocol):
    """h11 that tells the app whether the connection presented a verified client certificate.

    NOTE: the TLS layer asks for a client certificate but does not require one
    (`CERT_OPTIONAL`): the kubelet probes /health, /ready and /metrics over HTTPS without
    one (docs/runtime-flags.md). A certificate that is presented must verify against the CA,
    or the handshake fails; the API routes then refuse connections that presented none.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peercert = transport.get_extra_info("peercert")
        self.app_state = {
            **self.app_state,
            CLIENT_CERT_STATE: bool(peercert),
            CLIENT_CERT_SUBJECT: cert_subject(peercert),
        }


def ssl_context(config: RuntimeConfig) -> ssl.SSLContext | None:
    """TLS 1.2 at least (1.3 preferred: the highest both sides speak is chosen); with a client
    CA, client certificates are asked for and verified."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca is not None:
        context.load_verify_locations(cafile=config.tls_client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def build_server(config: RuntimeConfig, loader: Loader, **uvicorn_options: Any) -> DrainingServer:
    """The server for `config`, not yet started (`serve` runs it; tests run it in a thread);
    `loader` loads the model at start-up (`model.model_loader(config)`, or a test's own)."""
    app = create_app(config, loader)
    options = listen_options(config) | {"timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S}
    if config.tls_client_ca is not None:
        options["http"] = ClientCertProtocol
    return DrainingServer(uvicorn.Config(app, **(options | uvicorn_options)), app.state.server)


def listen_options(config: RuntimeConfig) -> dict[str, Any]:
    """uvicorn's address, TLS and logging for `config` (the API's server and a headless
    pod's alike)."""
    context = ssl_context(config)
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "log_config": None,  # NOTE: ours (or the test runner's) logging configuration applies
    }
    if context is not None:
        options["ssl_context_factory"] = lambda _config, _default: context
    return options


def serve(config: RuntimeConfig, loader: Loader) -> int:
    """Serve until drained; the exit status is 1 if the model failed to load or the engine
    failed while serving (requests in flight then end with an error)."""
    configure_logging(config.log_dir, "runtime.log", required=True)
    server = build_server(config, loader)
    server.run()
    state = server.state
    return 1 if state.load_error is not None or state.engine_failure is not None else 0
