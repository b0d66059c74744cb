"""Run a real kopf operator against kube_emulator.py over real HTTP on loopback.

The emulator and the operator each run in their own thread with their own event loop, so
tests stay plain synchronous functions: they act through `Cluster` (its own HTTP client,
marked by its User-Agent so its writes never count as the operator's) and wait with
`wait_for`, which polls and never sleeps blindly.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kmock
import kopf
import pytest
import urllib3
import yaml
from kube_emulator import ApiServer, Write
from kubernetes.config import kube_config

T = TypeVar("T")
Obj = dict[str, Any]
AGENT = "r1-operator-tests"

COLLECTIONS = {
    "DeepSeekDeployment": "/apis/r1-operator.dev/v1alpha1/namespaces/{ns}/deepseekdeployments",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Event": "/api/v1/namespaces/{ns}/events",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "LeaderWorkerSet": "/apis/leaderworkerset.x-k8s.io/v1/namespaces/{ns}/leaderworkersets",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
}


def wait_for(
    check: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    show: Callable[[], Any] | None = None,
) -> T:
    """Poll `check` until it returns something truthy and return that; fail after `timeout`
    seconds with the last value seen (or what `show` returns then)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    seen = show() if show else last
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {seen!r}")


class Cluster:
    """A synchronous client of the emulator, for tests: no caching, no retries."""

    def __init__(self, url: str, server: ApiServer) -> None:
        self.url, self.server = url.rstrip("/"), server
        self._http = urllib3.PoolManager()

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        status, body = self._call("GET", _path(kind, namespace, name))
        return None if status == 404 else body

    def list(self, kind: str, namespace: str, selector: str = "") -> list[Obj]:
        """Objects of `kind` in `namespace`; none when the API does not serve `kind`."""
        query = {"labelSelector": selector} if selector else None
        status, found = self._call("GET", _path(kind, namespace), query=query)
        return [] if status == 404 else list(found["items"])

    def create(self, manifest: Obj) -> Obj:
        meta = manifest["metadata"]
        return self._call("POST", _path(manifest["kind"], meta["namespace"]), body=manifest)[1]

    def patch(self, kind: str, namespace: str, name: str, patch: Obj, sub: str = "") -> Obj:
        """JSON merge patch, as `kubectl patch --type=merge` (of `sub`, e.g. "status")."""
        path = _path(kind, namespace, name) + (f"/{sub}" if sub else "")
        return self._call("PATCH", path, body=patch, content_type="merge-patch+json")[1]

    def set_status(self, kind: str, namespace: str, name: str, **status: Any) -> Obj:
        """Play the controller that is not there: merge `status` into the child's status."""
        return self.patch(kind, namespace, name, {"status": status}, sub="status")

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._call("DELETE", _path(kind, namespace, name))

    def watch(self, kind: str, namespace: str, seconds: float, **params: str) -> list[Obj]:
        """The events of one watch request that the server ends after `seconds`."""
        query = {"watch": "true", "timeoutSeconds": str(seconds), **params}
        response = self._http.request(
            "GET",
            self.url + _path(kind, namespace),
            fields=query,
            headers={"User-Agent": AGENT},
            preload_content=False,
        )
        events = [json.loads(line) for line in response.read().splitlines() if line.strip()]
        response.release_conn()
        return events

    def events(self, namespace: str, about: str) -> list[Obj]:
        """Events whose involvedObject is named `about`."""
        events = self.list("Event", namespace)
        return [event for event in events if event["involvedObject"].get("name") == about]

    def write_mark(self) -> int:
        return self.server.write_mark()

    def writes_since(self, mark: int) -> list[Write]:
        """Write requests since `mark` by anyone but the tests (the operator, kopf)."""
        return [write for write in self.server.writes_since(mark) if write.agent != AGENT]

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "json",
    ) -> tuple[int, Any]:
        """One raw request: (HTTP status, decoded JSON body or None)."""
        response = self._http.request(
            method,
            self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else ""),
            body=json.dumps(body) if body is not None else None,
            headers={"Content-Type": f"application/{content_type}", "User-Agent": AGENT},
        )
        return response.status, json.loads(response.data) if response.data else None

    def wait_quiet(self, seconds: float, timeout: float = 10.0) -> None:
        """Wait until nobody but the tests has written for `seconds` (a settled state)."""

        def quiet() -> bool:
            nonlocal mark, since
            if self.writes_since(mark):
                mark, since = self.write_mark(), time.monotonic()
            return time.monotonic() - since >= seconds

        mark, since = self.write_mark(), time.monotonic()
        wait_for(quiet, timeout, what=f"{seconds}s without writes")

    def _call(self, method: str, path: str, **options: Any) -> tuple[int, Any]:
        status, data = self.request(method, path, **options)
        if status >= 400 and not (method == "GET" and status == 404):
            raise AssertionError(f"{method} {path}: {status} {data}")
        return status, data


def _path(kind: str, namespace: str, name: str = "") -> str:
    collection = COLLECTIONS[kind].format(ns=namespace)
    return f"{collection}/{name}" if name else collection


@contextlib.contextmanager
def emulated_cluster(tmp: Path, **options: Any) -> Iterator[Cluster]:
    """An ApiServer(**options) on a loopback port and a kubeconfig for it, exported as
    KUBECONFIG for kopf's login and the kubernetes client alike."""
    started, stop = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with ApiServer(**options) as server, kmock.Server(server) as http:
            box.update(server=server, url=str(http.url))
            started.set()
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="api-emulator")
    thread.start()
    started.wait(10)
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(_kubeconfig(box["url"])))
    try:
        with pytest_env(KUBECONFIG=str(kubeconfig)):
            yield Cluster(box["url"], box["server"])
    finally:
        stop.set()
        thread.join(10)


def _kubeconfig(url: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "tests", "user": {"token": "test-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tests"}}],
        "current-context": "emulator",
    }


@contextlib.contextmanager
def pytest_env(**env: str) -> Iterator[None]:
    """Set environment variables for a block, module-scoped fixtures included."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        if "KUBECONFIG" in env:
            # NOTE: the client reads KUBECONFIG once, at import, for load_kube_config()'s
            # default; kopf's login_via_client and Kube.from_environment both rely on it.
            patch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", env["KUBECONFIG"])
        yield


def load_handlers(module: str) -> kopf.OperatorRegistry:
    """(Re-)import a handlers module into a fresh kopf registry, so values it reads from
    the environment at import apply and no handler is registered twice."""
    registry = kopf.OperatorRegistry()
    previous = kopf.get_default_registry()
    kopf.set_default_registry(registry)
    try:
        loaded = sys.modules.get(module)
        importlib.reload(loaded) if loaded else importlib.import_module(module)
    finally:
        kopf.set_default_registry(previous)
    return registry


@contextlib.contextmanager
def running_operator(registry: kopf.OperatorRegistry, stop_timeout: float = 20.0) -> Iterator[None]:
    """The operator of `registry` (plus a login from KUBECONFIG via the kubernetes client),
    cluster-wide and without peering, until the block ends; its crash fails the block, and
    so does not stopping within `stop_timeout` seconds."""
    kopf.on.login(registry=registry)(kopf.login_via_client)
    ready, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            coroutine = kopf.operator(
                registry=registry,
                clusterwide=True,
                standalone=True,
                ready_flag=ready,
                stop_flag=stop,
            )
            asyncio.run(coroutine)
        except BaseException as error:  # reported to the test thread below
            failure.append(error)
            ready.set()

    thread = threading.Thread(target=run, name="kopf-operator")
    thread.start()
    ready.wait(20)
    if failure:
        raise failure[0]
    try:
        yield
    finally:
        stop.set()
        thread.join(stop_timeout)
    if thread.is_alive():
        raise AssertionError(f"the operator did not stop within {stop_timeout} s")
    if failure:
        raise failure[0]
