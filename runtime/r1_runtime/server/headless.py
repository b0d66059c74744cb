"""The HTTP side of a pod that holds ranks of a replica but does not serve the API (node
rank > 0 of a LeaderWorkerSet group): `/health` and `/ready` for the kubelet's probes and
`/metrics`, on the same port and TLS settings as the leader's; no API route."""

from __future__ import annotations

import threading
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest

from r1_runtime.config import RuntimeConfig
from r1_runtime.server.metrics import PhaseCollector
from r1_runtime.server.serve import listen_options

JOIN_SECONDS = 10.0  # for the server's thread to stop


class HeadlessServer:
    """Runs in a thread beside the rank's loop; `phase` is `loading`, `ready` or `failed`."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.phase = "loading"
        registry = CollectorRegistry()
        labels = {"model_name": config.served_model_name, "node_rank": str(config.node_rank)}
        registry.register(PhaseCollector(labels, lambda: self.phase))
        app = _app(lambda: self.phase, registry)
        self._server = uvicorn.Server(uvicorn.Config(app, **listen_options(config)))
        self._thread = threading.Thread(target=self._server.run, name="r1-headless", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(JOIN_SECONDS)


def _app(phase: Callable[[], str], registry: CollectorRegistry) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready", response_model=None)
    async def ready() -> dict[str, str] | JSONResponse:
        current = phase()
        if current != "ready":
            return JSONResponse({"status": current}, status_code=503)
        return {"status": "ready"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return app
