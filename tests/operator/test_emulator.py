"""The API emulator and the harness, pinned: each gap kube_emulator.py fills (plain HTTP),
then a throwaway kopf operator run through the harness (create, status, finalizers, watch
without replay, injected faults retried)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
from factories import make_manifest
from kube_emulator import REQUEST_LOG
from operator_harness import COLLECTIONS, Cluster, emulated_cluster, running_operator, wait_for

DEPLOYMENTS = COLLECTIONS["Deployment"].format(ns="ml")
APPLY = "apply-patch+yaml"


def deployment(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ml", "labels": labels},
        "spec": {"replicas": 1},
    }


def test_created_objects_get_the_metadata_the_api_server_sets(cluster: Cluster) -> None:
    created = cluster.create(deployment("meta"))
    meta = created["metadata"]
    assert created["kind"] == "Deployment" and created["apiVersion"] == "apps/v1"
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and int(meta["resourceVersion"]) > 0


def test_generation_moves_on_spec_changes_only_and_resource_version_on_every_change(
    cluster: Cluster,
) -> None:
    rv = int(cluster.create(deployment("gen"))["metadata"]["resourceVersion"])
    labelled = cluster.patch("Deployment", "ml", "gen", {"metadata": {"labels": {"a": "b"}}})
    status = cluster.set_status("Deployment", "ml", "gen", readyReplicas=1)
    scaled = cluster.patch("Deployment", "ml", "gen", {"spec": {"replicas": 2}})
    again = cluster.patch("Deployment", "ml", "gen", {"spec": {"replicas": 2}})
    versions = [int(o["metadata"]["resourceVersion"]) for o in (labelled, status, scaled)]
    assert versions == sorted(versions) and versions[0] > rv
    assert [o["metadata"]["generation"] for o in (labelled, status, scaled)] == [1, 1, 2]
    assert again["metadata"]["resourceVersion"] == scaled["metadata"]["resourceVersion"]


def test_status_subresource_and_main_resource_change_only_their_own_part(
    cluster: Cluster,
) -> None:
    cluster.create(deployment("sub"))
    both = {"spec": {"replicas": 5}, "status": {"replicas": 5}}
    via_status = cluster.patch("Deployment", "ml", "sub", both, sub="status")
    assert via_status["spec"]["replicas"] == 1 and via_status["status"]["replicas"] == 5
    via_main = cluster.patch("Deployment", "ml", "sub", {**both, "status": {"replicas": 9}})
    assert via_main["spec"]["replicas"] == 5 and via_main["status"]["replicas"] == 5


def test_lists_carry_kind_and_honour_equality_label_selectors(cluster: Cluster) -> None:
    cluster.create(deployment("red", colour="red", size="s"))
    cluster.create(deployment("blue", colour="blue", size="s"))
    status, listed = cluster.request("GET", DEPLOYMENTS, query={"labelSelector": "size=s"})
    assert status == 200 and listed["kind"] == "DeploymentList"
    assert listed["apiVersion"] == "apps/v1" and int(listed["metadata"]["resourceVersion"]) > 0
    names = {o["metadata"]["name"] for o in cluster.list("Deployment", "ml", "size=s,colour!=red")}
    assert names == {"blue"}
    status, namespaces = cluster.request("GET", "/api/v1/namespaces")
    assert status == 200 and "ml" in {n["metadata"]["name"] for n in namespaces["items"]}


def test_discovery_reports_the_core_group_as_v1_and_leaderworkerset_only_when_served(
    cluster: Cluster,
) -> None:
    assert cluster.request("GET", "/api/v1")[1]["groupVersion"] == "v1"
    assert cluster.request("GET", "/apis/leaderworkerset.x-k8s.io/v1")[0] == 404
    cluster.server.serve_leaderworkersets(True)
    try:
        found = cluster.request("GET", "/apis/leaderworkerset.x-k8s.io/v1")[1]["resources"]
        assert "leaderworkersets" in {resource["name"] for resource in found}
    finally:
        cluster.server.serve_leaderworkersets(False)


def test_server_side_apply_creates_then_merges_and_drops_what_the_manager_stopped_applying(
    cluster: Cluster,
) -> None:
    path, query = f"{DEPLOYMENTS}/ssa", {"fieldManager": "op", "force": "true"}
    first = deployment("ssa", keep="1", drop="1")
    status, created = cluster.request("PATCH", path, query=query, body=first, content_type=APPLY)
    assert status == 201 and created["metadata"]["labels"] == {"keep": "1", "drop": "1"}
    cluster.patch("Deployment", "ml", "ssa", {"metadata": {"labels": {"theirs": "1"}}})
    second = deployment("ssa", keep="2")
    status, merged = cluster.request("PATCH", path, query=query, body=second, content_type=APPLY)
    assert status == 200 and merged["metadata"]["labels"] == {"keep": "2", "theirs": "1"}
    assert merged["metadata"]["uid"] == created["metadata"]["uid"]


def test_a_json_patch_whose_test_op_fails_is_422_and_changes_nothing(cluster: Cluster) -> None:
    rv = cluster.create(deployment("jp"))["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
    ]
    path = f"{DEPLOYMENTS}/jp"
    assert cluster.request("PATCH", path, body=ops, content_type="json-patch+json")[0] == 422
    ops[0]["value"] = rv
    assert cluster.request("PATCH", path, body=ops, content_type="json-patch+json")[0] == 200


def test_finalizers_hold_a_deleted_object_until_they_are_removed(cluster: Cluster) -> None:
    cluster.create({**deployment("fin"), "metadata": {**deployment("fin")["metadata"]}})
    cluster.patch("Deployment", "ml", "fin", {"metadata": {"finalizers": ["x"]}})
    cluster.delete("Deployment", "ml", "fin")
    held = cluster.get("Deployment", "ml", "fin")
    assert held is not None and held["metadata"]["deletionTimestamp"]
    cluster.patch("Deployment", "ml", "fin", {"metadata": {"finalizers": None}})
    assert cluster.get("Deployment", "ml", "fin") is None


def test_deleting_an_owner_cascades_to_its_dependents_even_ones_created_later(
    cluster: Cluster,
) -> None:
    owner = cluster.create(deployment("owner"))
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "owner"}
    ref["uid"] = owner["metadata"]["uid"]
    child = {**deployment("owned"), "metadata": {"name": "owned", "ownerReferences": [ref]}}
    cluster.create({**child, "metadata": {**child["metadata"], "namespace": "ml"}})
    cluster.delete("Deployment", "ml", "owner")
    assert cluster.get("Deployment", "ml", "owned") is None
    cluster.create({**child, "metadata": {**child["metadata"], "namespace": "ml"}})
    assert cluster.get("Deployment", "ml", "owned") is None, "a dangling dependent stays"


def test_watch_from_a_resource_version_replays_nothing_older_and_filters_labels(
    cluster: Cluster,
) -> None:
    cluster.create(deployment("w1", watch="yes"))
    cluster.create(deployment("w2", watch="no"))
    rv = cluster.list("Deployment", "ml") and cluster.request("GET", DEPLOYMENTS)[1]
    since = rv["metadata"]["resourceVersion"]
    cluster.patch("Deployment", "ml", "w1", {"spec": {"replicas": 3}})
    cluster.patch("Deployment", "ml", "w2", {"spec": {"replicas": 3}})
    events = cluster.watch(
        "Deployment", "ml", 0.3, resourceVersion=since, labelSelector="watch=yes"
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("MODIFIED", "w1")]


def test_a_watch_from_a_forgotten_resource_version_is_410_gone(tmp_path: Path) -> None:
    with emulated_cluster(tmp_path, event_history=2) as small:
        for name in ("a", "b", "c", "d"):
            small.create(deployment(name))
        events = small.watch("Deployment", "ml", 0.3, resourceVersion="1")
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]


def test_injected_faults_answer_the_next_matching_requests_and_change_nothing(
    cluster: Cluster,
) -> None:
    cluster.create(deployment("faulty"))
    cluster.server.fail("PATCH", "deployments", 409, times=2)
    path, body = f"{DEPLOYMENTS}/faulty", {"spec": {"replicas": 7}}
    answers = [cluster.request("PATCH", path, body=body)[0] for _ in range(3)]
    assert answers == [409, 409, 200] and cluster.server.pending_faults() == 0


def test_the_request_log_stays_bounded(cluster: Cluster) -> None:
    for _ in range(REQUEST_LOG + 50):
        cluster.request("GET", "/api/v1")
    assert len(list(cluster.server)) <= REQUEST_LOG


# --- a throwaway kopf operator through the harness ---

TOY = kopf.OperatorRegistry()
DSD = ("r1-operator.dev", "v1alpha1", "deepseekdeployments")
SEEN: list[tuple[str | None, str]] = []
FINALIZED: list[str] = []


@kopf.on.startup(registry=TOY)
def toy_settings(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="toy.test")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="toy.test")
    settings.posting.level = logging.WARNING
    settings.networking.error_backoffs = [0.1, 0.2, 0.5]
    kubernetes.config.load_kube_config()
    memo.core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient())


@kopf.on.create(*DSD, registry=TOY)
def toy_create(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
    child = {"metadata": {"name": body.metadata.name}, "data": {"made": "by-toy"}}
    kopf.adopt(child, owner=body)
    try:
        memo.core.create_namespaced_config_map(body.metadata.namespace, child)
    except kubernetes.client.ApiException as error:
        raise kopf.TemporaryError(f"API {error.status}", delay=0.1) from None
    patch.status["toy"] = "created"


@kopf.on.delete(*DSD, registry=TOY)
def toy_delete(name: str, **_: Any) -> None:
    FINALIZED.append(name)


@kopf.on.event("", "v1", "configmaps", labels={"toy": "watched"}, registry=TOY)
def toy_seen(type: str | None, name: str, **_: Any) -> None:
    SEEN.append((type, name))


@pytest.fixture(scope="module")
def toy(cluster: Cluster) -> Iterator[Cluster]:
    before = {"kind": "ConfigMap", "metadata": {"name": "before", "namespace": "toys"}}
    cluster.create({**before, "metadata": {**before["metadata"], "labels": {"toy": "watched"}}})
    with running_operator(TOY):
        yield cluster


def toy_dsd(name: str) -> dict[str, Any]:
    return make_manifest(name=name, namespace="toys")


def test_toy_create_runs_the_handler_which_makes_a_child_and_a_status(toy: Cluster) -> None:
    dsd = toy.create(toy_dsd("toy-1"))
    child = wait_for(lambda: toy.get("ConfigMap", "toys", "toy-1"), what="the child")
    assert child["metadata"]["ownerReferences"][0]["uid"] == dsd["metadata"]["uid"]
    live = wait_for(
        lambda: (
            (o := toy.get("DeepSeekDeployment", "toys", "toy-1"))
            and (o.get("status") or {}).get("toy") == "created"
            and o
        ),
        what="status.toy",
    )
    assert live["metadata"]["finalizers"], "kopf's finalizer JSON patch (with 'test') failed"
    assert toy.server.errors_by_status[500] == 0


def test_toy_watch_delivers_what_it_listed_once_and_later_changes(toy: Cluster) -> None:
    wait_for(lambda: (None, "before") in SEEN, what="the listed ConfigMap")
    toy.patch("ConfigMap", "toys", "before", {"data": {"changed": "yes"}})
    wait_for(lambda: ("MODIFIED", "before") in SEEN, what="the change")
    assert [seen for seen in SEEN if seen[1] == "before"] == [
        (None, "before"),
        ("MODIFIED", "before"),
    ]


def test_toy_injected_conflicts_and_errors_are_retried_without_duplicates(
    toy: Cluster,
) -> None:
    toy.server.fail("POST", "configmaps", 409, times=2)
    toy.server.fail("PATCH", "deepseekdeployments", 500, times=1)
    mark = toy.write_mark()
    toy.create(toy_dsd("toy-2"))
    wait_for(lambda: toy.get("ConfigMap", "toys", "toy-2"), what="the child after 409s")
    wait_for(
        lambda: ((toy.get("DeepSeekDeployment", "toys", "toy-2") or {}).get("status") or {}).get(
            "toy"
        ),
        what="status.toy after a 500",
    )
    posts = [w for w in toy.writes_since(mark) if w.method == "POST" and "configmaps" in w.path]
    assert len(posts) == 3 and toy.server.pending_faults() == 0


def test_toy_delete_runs_the_finalizer_handler_then_the_children_go(toy: Cluster) -> None:
    toy.create(toy_dsd("toy-3"))
    wait_for(lambda: toy.get("ConfigMap", "toys", "toy-3"), what="the child")
    toy.delete("DeepSeekDeployment", "toys", "toy-3")
    wait_for(lambda: toy.get("DeepSeekDeployment", "toys", "toy-3") is None, what="deletion")
    assert "toy-3" in FINALIZED and toy.get("ConfigMap", "toys", "toy-3") is None
