"""A DeepSeekDeployment deleted while its drift timer reconciles is gone within seconds.

kopf keeps the object's finalizer until the timer has exited, and looks again only every
settings.background.cancellation_polling seconds (60 by default). The reconcile is held in
flight here by slowing the operator's GET of the object, the first call it makes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp.web
import attrs
import operator_harness
import pytest
from factories import make_manifest
from kube_emulator import ApiServer
from operator_harness import (
    AGENT,
    COLLECTIONS,
    Cluster,
    emulated_cluster,
    load_handlers,
    pytest_env,
    running_operator,
    wait_for,
)
from r1_operator import render
from r1_operator.reconcile import is_subset
from r1_operator.validation import validate

pytestmark = pytest.mark.slow

DRIFT = 1.0
HOLD = 3.0
"""Seconds the held drift reconcile stays in flight, well under kopf's default 60 s poll."""


@attrs.define(kw_only=True)
class HoldingApiServer(ApiServer):
    """The emulator; once `hold_next(path)` is called, the operator's next GET of `path`
    is answered only `HOLD` seconds later, and `held` is set when it arrives."""

    _hold_path: str | None = attrs.field(default=None, init=False)
    held: threading.Event = attrs.field(factory=threading.Event, init=False)

    def hold_next(self, path: str) -> None:
        self.held.clear()
        self._hold_path = path

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        is_operator_get = (
            raw_request.method == "GET" and raw_request.headers.get("User-Agent") != AGENT
        )
        if is_operator_get and raw_request.path == self._hold_path:
            self._hold_path = None
            self.held.set()
            await asyncio.sleep(HOLD)
        return await super().__call__(raw_request)


@pytest.fixture
def r1(tmp_path: Path) -> Iterator[Cluster]:
    env = pytest_env(R1_OPERATOR_DRIFT_INTERVAL=str(DRIFT), R1_OPERATOR_METRICS_PORT="0")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(operator_harness, "ApiServer", HoldingApiServer)
        with (
            emulated_cluster(tmp_path) as cluster,
            env,
            running_operator(load_handlers("r1_operator.handlers")),
        ):
            yield cluster


def converged(cluster: Cluster, manifest: dict[str, object]) -> bool:
    for child in render.render(validate(manifest)):
        meta = child["metadata"]
        if not is_subset(child, cluster.get(child["kind"], meta["namespace"], meta["name"])):
            return False
    return True


def test_a_deployment_deleted_during_a_drift_reconcile_is_gone_within_seconds(
    r1: Cluster,
) -> None:
    manifest = make_manifest(namespace="drift")
    r1.create(manifest)
    wait_for(lambda: converged(r1, manifest), what="convergence")
    server = r1.server
    assert isinstance(server, HoldingApiServer)
    server.hold_next(COLLECTIONS["DeepSeekDeployment"].format(ns="drift") + "/r1")
    assert server.held.wait(DRIFT + 10), "the drift timer never reconciled"
    started = time.monotonic()
    r1.delete("DeepSeekDeployment", "drift", "r1")
    wait_for(lambda: r1.get("DeepSeekDeployment", "drift", "r1") is None, timeout=20, what="gone")
    assert time.monotonic() - started < HOLD + 10
