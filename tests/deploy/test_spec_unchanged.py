"""The operator never writes a DeepSeekDeployment's spec, so what Argo CD synced from Git stays
in sync (docs/gitops.md). The real operator (r1_operator.handlers under kopf) runs against the
API emulator of tests/operator/operator_harness.py; tests play the controllers by setting children's
status and check, after reconciles by every trigger, that the stored spec is the applied one
byte for byte and that metadata.generation (which moves on spec changes only) never moved.
Argo CD's health check then reads the status the running operator wrote."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import prometheus_client
import pytest
import yaml
from argocd_support import health
from factories import EXAMPLES, make_manifest
from operator_harness import (
    Cluster,
    emulated_cluster,
    load_handlers,
    pytest_env,
    running_operator,
    wait_for,
)

pytestmark = pytest.mark.slow

DRIFT = 1.0
NAMESPACES = (f"spec{n}" for n in itertools.count())
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def r1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = pytest_env(R1_OPERATOR_DRIFT_INTERVAL=str(DRIFT), R1_OPERATOR_METRICS_PORT="0")
    with (
        emulated_cluster(tmp_path_factory.mktemp("kube")) as cluster,
        env,
        running_operator(load_handlers("r1_operator.handlers")),
    ):
        yield cluster


def reconciles() -> float:
    sample = prometheus_client.REGISTRY.get_sample_value
    results = ("ok", "invalid", "waiting", "error")
    return sum(sample("r1_operator_reconciles_total", {"result": r}) or 0 for r in results)


def stored(cluster: Cluster, manifest: Obj) -> Obj:
    meta = manifest["metadata"]
    found = cluster.get("DeepSeekDeployment", meta["namespace"], meta["name"])
    assert found is not None
    return found


def spec_bytes(obj: Obj) -> bytes:
    """The spec as JSON in the order its keys arrived: a reordering counts as a change."""
    return json.dumps(obj["spec"], separators=(",", ":")).encode()


def example(name: str) -> Obj:
    manifest: Obj = yaml.safe_load(next(p for p in EXAMPLES if p.name == name).read_text())
    return manifest


CASES = [
    pytest.param(example("deepseek.yaml"), "Healthy", id="the GPU example with an autoscaler"),
    pytest.param(example("cpu-demo.yaml"), "Healthy", id="the CPU demo"),
    pytest.param(
        example("deepseek-r1-671b.yaml"),
        "Progressing",
        id="multi-node, waiting for the LeaderWorkerSet API",
    ),
    pytest.param(
        make_manifest({"engine": {"backend": "onnx"}}),
        "Degraded",
        id="an invalid spec refused as Failed",
    ),
]


@pytest.mark.parametrize(("applied", "argocd_health"), CASES)
def test_reconciling_never_changes_the_spec(r1: Cluster, applied: Obj, argocd_health: str) -> None:
    namespace = next(NAMESPACES)
    applied["metadata"]["namespace"] = namespace
    before = spec_bytes(applied)
    created = r1.create(applied)
    assert spec_bytes(created) == before
    name = applied["metadata"]["name"]
    wait_for(
        lambda: (stored(r1, applied).get("status") or {}).get("observedGeneration") == 1,
        what="a status for generation 1",
    )
    if stored(r1, applied)["status"]["phase"] == "Pending":
        # Multi-node waits for the LeaderWorkerSet API; installing it lets the spec proceed.
        r1.server.serve_leaderworkersets(True)
        wait_for(lambda: r1.list("LeaderWorkerSet", namespace), timeout=DRIFT + 5, what="the LWS")
    for workload in r1.list("Deployment", namespace):
        # The Deployment controller's part: the rollout completes, so status moves on.
        r1.set_status(
            "Deployment",
            namespace,
            workload["metadata"]["name"],
            observedGeneration=workload["metadata"]["generation"],
            replicas=1,
            updatedReplicas=1,
            readyReplicas=1,
        )
    runs = reconciles()
    wait_for(lambda: reconciles() >= runs + 2, timeout=3 * DRIFT + 5, what="two more reconciles")
    final = stored(r1, applied)
    assert spec_bytes(final) == before, "the operator changed the spec it was given"
    assert final["metadata"]["generation"] == 1
    # What Argo CD's health check (deploy/argocd/health.lua) makes of what the operator wrote.
    assert health(final)[0] == argocd_health, health(final)
    r1.delete("DeepSeekDeployment", namespace, name)
    wait_for(lambda: r1.get("DeepSeekDeployment", namespace, name) is None, what="deletion")
    r1.server.serve_leaderworkersets(False)
