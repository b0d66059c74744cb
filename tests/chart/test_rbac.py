"""Least privilege: the chart's RBAC grants exactly what the operator uses.

The real operator (r1_operator.handlers under kopf, with peering) runs against the API
emulator through create, readiness, an update that prunes, a refused spec, a pre-build
Job, a multi-node deployment and deletion, once cluster-wide and once watching one
namespace. Every request
it makes is mapped to the access RBAC checks (rbac_support.access_of), and the chart's
rendered ClusterRole and Roles must grant all of them and nothing else, but for the
allowances below, each with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import operator_harness
import pytest
import yaml
from chart_support import VARIANTS, by_kind, render
from factories import ROOT, make_manifest
from operator_harness import Cluster, emulated_cluster, load_handlers, pytest_env, wait_for
from r1_operator.kube import CHILD_KINDS
from r1_operator.reconcile import is_subset
from r1_operator.render import render as render_children
from r1_operator.validation import validate
from rbac_support import Access, RecordingApiServer, Scoped, access_of, granted

pytestmark = pytest.mark.slow

Obj = dict[str, Any]
EXAMPLES_DIR = ROOT / "examples"
PEERING = "r1-operator"
WATCHED = "ml"
"""The namespace the namespaced run watches (VARIANTS["namespaced-peering"])."""


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


PRUNE_ALLOWANCE = {
    Access("delete", _group(kind.api_version), kind.plural) for kind in CHILD_KINDS.values()
}
"""reconcile prunes any kind it renders (kube.CHILD_KINDS) once a spec stops rendering it.
The scenario prunes four (HPA, PDB, NetworkPolicy, a claim); the others go when a
Deployment turns into a LeaderWorkerSet or back, a changed spec replaces the pre-build
Job, or a renamed child replaces the old one."""


@contextlib.contextmanager
def operator_running(namespaces: list[str]) -> Iterator[None]:
    """r1_operator.handlers under kopf with peering, as `r1-operator run --peering` runs it
    (cluster-wide when `namespaces` is empty), until the block ends."""
    registry = load_handlers("r1_operator.handlers")
    kopf.on.login(registry=registry)(kopf.login_via_client)
    ready, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        coroutine = kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            peering_name=PEERING,
            standalone=False,
            ready_flag=ready,
            stop_flag=stop,
        )
        try:
            asyncio.run(coroutine)
        except BaseException as error:  # reported to the test thread below
            failure.append(error)
            ready.set()

    thread = threading.Thread(target=run, name="kopf-operator")
    thread.start()
    ready.wait(20)
    try:
        yield
    finally:
        stop.set()
        thread.join(20)
    if failure:
        raise failure[0]


def converged(cluster: Cluster, manifest: Obj) -> bool:
    for child in render_children(validate(manifest)):
        meta = child["metadata"]
        if not is_subset(child, cluster.get(child["kind"], meta["namespace"], meta["name"])):
            return False
    return True


def phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    found = cluster.get("DeepSeekDeployment", namespace, name) or {}
    return (found.get("status") or {}).get("phase")


def exercise(cluster: Cluster, namespace: str) -> None:
    """Everything the operator does to a cluster, in one namespace."""
    create_until_ready(cluster, namespace)
    update_and_prune(cluster, namespace)
    cluster.create(make_manifest({"engine": {"backend": "onnx"}}, name="bad", namespace=namespace))
    wait_for(lambda: phase(cluster, namespace, "bad") == "Failed", what="the refused spec")
    cluster.create(make_manifest({"engine": {"prebuild": True}}, name="pre", namespace=namespace))
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    wait_for(lambda: cluster.request("GET", jobs)[1]["items"], what="the pre-build Job")
    multi_node: Obj = yaml.safe_load((EXAMPLES_DIR / "deepseek-r1-671b.yaml").read_text())
    multi_node["metadata"]["namespace"] = namespace
    cluster.create(multi_node)
    wait_for(lambda: converged(cluster, multi_node), what="the LeaderWorkerSet")
    delete_all(cluster, namespace)


def create_until_ready(cluster: Cluster, namespace: str) -> None:
    """r1 with every optional child (PDB, HPA, NetworkPolicy, a deletable cold claim),
    its claims bound and its Deployment ready, until its phase is Ready."""
    spec = {
        "replicas": 2,
        "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
        "storage": {"cold": {"size": "1Gi"}},
    }
    manifest = make_manifest(spec, namespace=namespace)
    cluster.create(manifest)
    wait_for(lambda: converged(cluster, manifest), what="the children")
    for pvc in cluster.list("PersistentVolumeClaim", namespace):
        name = pvc["metadata"]["name"]
        cluster.set_status("PersistentVolumeClaim", namespace, name, phase="Bound")
    ready = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    cluster.set_status("Deployment", namespace, "r1", observedGeneration=1, **ready)
    wait_for(lambda: phase(cluster, namespace, "r1") == "Ready", what="Ready")


def update_and_prune(cluster: Cluster, namespace: str) -> None:
    """A spec that no longer renders the PDB, HPA, NetworkPolicy and cold claim."""
    change = {
        "replicas": 1,
        "autoscaling": None,
        "security": {"networkPolicy": {"enabled": False}},
        "storage": {"cold": {"existingClaim": "logs"}},
    }
    cluster.patch("DeepSeekDeployment", namespace, "r1", {"spec": change})
    wait_for(lambda: not cluster.list("HorizontalPodAutoscaler", namespace), what="pruning")
    wait_for(lambda: not cluster.get("PersistentVolumeClaim", namespace, "r1-cold"), what="cold")


def delete_all(cluster: Cluster, namespace: str) -> None:
    for dsd in cluster.list("DeepSeekDeployment", namespace):
        cluster.delete("DeepSeekDeployment", namespace, dsd["metadata"]["name"])

    def left() -> list[Obj]:
        return [dsd["metadata"] for dsd in cluster.list("DeepSeekDeployment", namespace)]

    wait_for(lambda: not left(), timeout=20, what="deletion", show=left)


def observe(tmp: Path, namespaces: list[str]) -> list[Scoped]:
    """Every access the operator made through `exercise`, watching `namespaces` (all when
    empty) with peering."""
    namespace = namespaces[0] if namespaces else "rbac"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(operator_harness, "ApiServer", RecordingApiServer)
        with emulated_cluster(tmp, leaderworkersets=True) as cluster:
            peering = (
                "clusterkopfpeerings" if not namespaces else f"namespaces/{namespace}/kopfpeerings"
            )
            body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": PEERING}}
            status, _ = cluster.request("POST", f"/apis/kopf.dev/v1/{peering}", body=body)
            assert status == 201
            # A fast drift timer: its reconciles are part of what the operator does, and they
            # run during the deletions too, which then wait for them (seconds, not kopf's
            # default 60 s: handlers.configure sets cancellation_polling).
            env = pytest_env(R1_OPERATOR_DRIFT_INTERVAL="0.2", R1_OPERATOR_METRICS_PORT="0")
            with env, operator_running(namespaces):
                exercise(cluster, namespace)
            server = cluster.server
            assert isinstance(server, RecordingApiServer)
            return server.accesses()


@pytest.fixture(scope="module")
def cluster_wide(tmp_path_factory: pytest.TempPathFactory) -> list[Scoped]:
    return observe(tmp_path_factory.mktemp("cluster-wide"), [])


@pytest.fixture(scope="module")
def namespaced(tmp_path_factory: pytest.TempPathFactory) -> list[Scoped]:
    return observe(tmp_path_factory.mktemp("namespaced"), [WATCHED])


def without_peering(accesses: set[Access]) -> set[Access]:
    """What a standalone operator (no --peering) uses: the same, less kopf's peering."""
    return {access for access in accesses if access.group != "kopf.dev"}


def rules_of(objects: list[Obj], kind: str, namespace: str | None = None) -> set[Access]:
    found = [o for o in by_kind(objects, kind) if o["metadata"].get("namespace") == namespace]
    assert len(found) == 1, f"one {kind} in {namespace}: {found}"
    return granted(found[0]["rules"])


def assert_least(granted_: set[Access], used: set[Access], allowed: set[Access]) -> None:
    missing = used - granted_
    unused = granted_ - used - allowed
    assert not missing, f"the operator needs: {sorted(map(str, missing))}"
    assert not unused, f"granted but never used: {sorted(map(str, unused))}"


@pytest.mark.parametrize("peering", [False, True], ids=["standalone", "with peering"])
def test_cluster_role_grants_exactly_what_the_operator_uses_cluster_wide(
    cluster_wide: list[Scoped], peering: bool
) -> None:
    used = {scoped.access for scoped in cluster_wide}
    values = VARIANTS["peering" if peering else "default"]
    assert_least(
        rules_of(render(values), "ClusterRole"),
        used if peering else without_peering(used),
        PRUNE_ALLOWANCE,
    )


@pytest.mark.parametrize("peering", [False, True], ids=["standalone", "with peering"])
def test_roles_grant_exactly_what_the_operator_uses_in_its_namespaces(
    namespaced: list[Scoped], peering: bool
) -> None:
    """Watching namespaces, every namespaced request stays in them (no cluster-wide
    lists), the Role there grants it, and the ClusterRole keeps to kopf's two
    cluster-scoped reads."""
    values = {**VARIANTS["namespaced-peering"], "peering": {"enabled": peering}}
    values["replicaCount"] = 2 if peering else 1
    objects = render(values)
    filtered = {s for s in namespaced if peering or s.access.group != "kopf.dev"}
    in_namespace = {s.access for s in filtered if s.namespace == WATCHED}
    cluster_scoped = {s.access for s in filtered if s.namespace is None}
    assert {s.namespace for s in filtered} <= {WATCHED, None}
    assert_least(rules_of(objects, "Role", WATCHED), in_namespace, PRUNE_ALLOWANCE)
    assert_least(rules_of(objects, "ClusterRole"), cluster_scoped, set())
    assert {a.resource for a in cluster_scoped} <= {"customresourcedefinitions", "namespaces"}


def test_the_operator_watches_and_patches_its_peering_object(cluster_wide: list[Scoped]) -> None:
    peering = {s.access for s in cluster_wide if s.access.group == "kopf.dev"}
    assert {a.verb for a in peering} >= {"list", "watch", "patch"}


def test_the_scenario_prunes_the_kinds_it_turns_off(cluster_wide: list[Scoped]) -> None:
    """The scenario does prune: at least the kinds it turns off are deleted for real."""
    deleted = {s.access.resource for s in cluster_wide if s.access.verb == "delete"}
    assert {"horizontalpodautoscalers", "poddisruptionbudgets", "networkpolicies"} <= deleted
    assert "persistentvolumeclaims" in deleted


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        pytest.param(
            "GET",
            "/apis/apps/v1/namespaces/ml/deployments",
            {"labelSelector": "a=b"},
            Scoped(Access("list", "apps", "deployments"), "ml"),
            id="GET of a collection in a namespace is list there",
        ),
        pytest.param(
            "GET",
            "/apis/apps/v1/deployments",
            {"watch": "true"},
            Scoped(Access("watch", "apps", "deployments"), None),
            id="GET ?watch of all namespaces is a cluster-wide watch",
        ),
        pytest.param(
            "GET",
            "/apis/r1-operator.dev/v1alpha1/namespaces/ml/deepseekdeployments/r1",
            {},
            Scoped(Access("get", "r1-operator.dev", "deepseekdeployments"), "ml"),
            id="GET of one object is get",
        ),
        pytest.param(
            "PATCH",
            "/apis/r1-operator.dev/v1alpha1/namespaces/ml/deepseekdeployments/r1/status",
            {},
            Scoped(Access("patch", "r1-operator.dev", "deepseekdeployments/status"), "ml"),
            id="PATCH of a subresource is patch on plural/subresource",
        ),
        pytest.param(
            "POST",
            "/api/v1/namespaces/ml/events",
            {},
            Scoped(Access("create", "", "events"), "ml"),
            id="POST to a core collection is create",
        ),
        pytest.param(
            "GET",
            "/api/v1/namespaces",
            {},
            Scoped(Access("list", "", "namespaces"), None),
            id="GET of the namespaces is a cluster-scoped list",
        ),
        pytest.param(
            "DELETE",
            "/api/v1/namespaces/ml/services",
            {},
            Scoped(Access("deletecollection", "", "services"), "ml"),
            id="DELETE of a collection is deletecollection",
        ),
        pytest.param(
            "GET", "/apis/leaderworkerset.x-k8s.io/v1", {}, None, id="discovery needs no rule"
        ),
        pytest.param("GET", "/api", {}, None, id="the core discovery root needs no rule"),
    ],
)
def test_access_of_a_request(
    method: str, path: str, query: dict[str, str], expected: Scoped | None
) -> None:
    assert access_of(method, path, query) == expected
