"""Two operator replicas as the chart runs them (VARIANTS["peering"]): `r1-operator run`
processes with the chart's arguments, peering through one ClusterKopfPeering on the API
emulator. One of them must serve while the other stands by: each draws its own kopf
priority (`r1-operator run --priority`), and kopf pauses every peer of the same one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import operator_harness
import pytest
from chart_support import VARIANTS, operator_container, render
from factories import make_manifest
from operator_harness import Cluster, emulated_cluster, wait_for
from rbac_support import RecordingApiServer

pytestmark = pytest.mark.slow

Obj = dict[str, object]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(operator_harness, "ApiServer", RecordingApiServer)
        with emulated_cluster(tmp_path) as cluster:
            yield cluster


def replica(args: list[str], port: int) -> subprocess.Popen[bytes]:
    """One operator pod: the chart's container args, its own liveness port on loopback."""
    args = [
        f"--liveness=http://127.0.0.1:{port}/healthz" if a.startswith("--liveness") else a
        for a in args
    ]
    env = {**os.environ, "R1_OPERATOR_METRICS_PORT": "0", "R1_OPERATOR_DRIFT_INTERVAL": "600"}
    command = [sys.executable, "-m", "r1_operator.cli", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def peers(cluster: Cluster, name: str) -> dict[str, object]:
    _, peering = cluster.request("GET", f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}")
    return dict((peering or {}).get("status") or {})


def test_of_two_peered_replicas_one_serves(cluster: Cluster, tmp_path: Path) -> None:
    objects = render(VARIANTS["peering"])
    [peering] = [o for o in objects if o["kind"] == "ClusterKopfPeering"]
    name = peering["metadata"]["name"]
    status, _ = cluster.request("POST", "/apis/kopf.dev/v1/clusterkopfpeerings", body=peering)
    assert status == 201
    args = operator_container(objects)["args"]
    replicas = [replica(args, port) for port in (18081, 18082)]
    try:
        if not wait_for_quietly(lambda: len(peers(cluster, name)) == 2, timeout=30):
            pytest.fail(f"the replicas never both joined the peering: {peers(cluster, name)}")
        cluster.create(make_manifest(namespace="ha"))
        wait_for(lambda: cluster.list("Deployment", "ha"), timeout=10, what="one replica serving")
    finally:
        for process in replicas:
            process.terminate()
        for process in replicas:
            process.wait(20)


def wait_for_quietly(check: object, timeout: float) -> bool:
    try:
        wait_for(check, timeout)  # type: ignore[arg-type]
    except AssertionError:
        return False
    return True
