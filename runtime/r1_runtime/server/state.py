"""What the routes share: the settings, the model once it is loaded, API keys, metrics and
the admission state (loading or building, ready, draining). Used from the event loop, but
for `set_startup_phase`, which the loader calls from its worker thread."""

from __future__ import annotations

import time

from r1_runtime.config import RuntimeConfig
from r1_runtime.engine.async_engine import RequestHandle
from r1_runtime.engine.stats import EngineStats
from r1_runtime.engine_cache.resolve import StartupPhase
from r1_runtime.server.auth import APIKeys
from r1_runtime.server.errors import APIError
from r1_runtime.server.metrics import ServerMetrics
from r1_runtime.server.model import LoadedModel


class ServerState:
    """Admission control. Requests are admitted once the model is loaded and until a drain
    begins; admitted requests are tracked until their stream ends, so a drain knows when it
    is done and can abort what is left at its deadline."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.keys = APIKeys(config.api_key_file, config.api_keys)
        self.metrics = ServerMetrics(
            config.served_model_name, self.engine_stats, phase=lambda: self.phase
        )
        self.model: LoadedModel | None = None
        self._startup_phase: StartupPhase = "loading"
        self.load_error: BaseException | None = None
        self._drain_deadline: float | None = None
        self._active: set[RequestHandle] = set()

    @property
    def is_draining(self) -> bool:
        return self._drain_deadline is not None

    @property
    def engine_failure(self) -> BaseException | None:
        """Why the engine stopped (a step failed: e.g. a rank of the replica died); the
        server then exits non-zero."""
        return None if self.model is None else self.model.engine.failure

    @property
    def phase(self) -> str:
        """`loading`, `building`, `ready`, `draining` or `failed`: what `/ready` and the
        `r1_runtime:phase` gauge report."""
        if self.engine_failure is not None:
            return "failed"
        if self.is_draining:
            return "draining"
        return "ready" if self.model is not None else self._startup_phase

    def set_startup_phase(self, phase: StartupPhase) -> None:
        """Called by the loader (from its thread) as it moves between loading the weights
        and building the engine. NOTE: one attribute store, atomic under the GIL."""
        self._startup_phase = phase

    @property
    def num_active(self) -> int:
        return len(self._active)

    def admit(self) -> LoadedModel:
        """The model, for a new request; a 503 while starting or draining."""
        if self.engine_failure is not None:
            raise APIError(503, "the engine failed; the server is exiting", code="engine_failed")
        if self.is_draining:
            raise APIError(503, "the server is shutting down", code="draining")
        if self.model is None:
            raise APIError(503, "the model is still loading", code="starting")
        return self.model

    def track(self, handle: RequestHandle) -> None:
        self._active.add(handle)

    def untrack(self, handle: RequestHandle) -> None:
        self._active.discard(handle)

    def begin_drain(self) -> None:
        """Refuse new requests from now on; running ones get `drain_timeout` seconds."""
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self.config.drain_timeout

    def is_drained(self) -> bool:
        """True once no admitted request is left. Past the deadline, aborts those that are
        (their streams end with finish_reason `abort`) and answers True."""
        if self._drain_deadline is None:
            return False
        if self._active and time.monotonic() >= self._drain_deadline:
            for handle in self._active:
                handle.abort()
            self._active.clear()
        return not self._active

    def engine_stats(self) -> EngineStats | None:
        """What the engine published after its last step, for /metrics; None before the
        model is loaded."""
        return None if self.model is None else self.model.engine.stats
