"""The real operator (r1_operator.handlers under kopf) against the API emulator over HTTP.

One operator for the module, with a 1-second drift timer; each test works in a namespace
of its own, and deletes its DeepSeekDeployments when it ends. There are no controllers:
tests play them by setting children's status.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import prometheus_client
import pytest
import yaml
from factories import EXAMPLES, make_manifest
from kube_emulator import merge_patch
from operator_harness import Cluster, load_handlers, pytest_env, running_operator, wait_for
from r1_operator import labels, render
from r1_operator.reconcile import is_subset
from r1_operator.validation import validate

DRIFT = 1.0
"""R1_OPERATOR_DRIFT_INTERVAL for the module: the timer corrects drift within this."""
CHILD_KINDS = [
    "ConfigMap",
    "PersistentVolumeClaim",
    "Deployment",
    "LeaderWorkerSet",
    "Service",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
]
NAMESPACES = (f"t{n}" for n in itertools.count())
Obj = dict[str, Any]


class Failures(logging.Handler):
    """kopf's reports of handlers that raised something other than kopf's own errors."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "failed with an exception" in record.getMessage():
            self.messages.append(record.getMessage())


FAILURES = Failures()


@pytest.fixture(scope="module")
def r1(cluster: Cluster) -> Iterator[Cluster]:
    env = pytest_env(R1_OPERATOR_DRIFT_INTERVAL=str(DRIFT), R1_OPERATOR_METRICS_PORT="0")
    logging.getLogger("kopf.objects").addHandler(FAILURES)
    try:
        with env, running_operator(load_handlers("r1_operator.handlers")):
            yield cluster
    finally:
        logging.getLogger("kopf.objects").removeHandler(FAILURES)


@pytest.fixture
def ns(r1: Cluster) -> Iterator[str]:
    """A fresh namespace; its DeepSeekDeployments are deleted (and gone) afterwards."""
    namespace = next(NAMESPACES)
    yield namespace
    for dsd in r1.list("DeepSeekDeployment", namespace):
        r1.delete("DeepSeekDeployment", namespace, dsd["metadata"]["name"])

    def left() -> list[Obj]:
        return [dsd["metadata"] for dsd in r1.list("DeepSeekDeployment", namespace)]

    wait_for(lambda: not left(), timeout=20, what="cleanup", show=left)


def example(name: str, namespace: str) -> Obj:
    manifest: Obj = yaml.safe_load(next(p for p in EXAMPLES if p.name == name).read_text())
    manifest["metadata"]["namespace"] = namespace
    return manifest


def rendered(manifest: Obj) -> list[Obj]:
    return render.render(validate(manifest))


def converged(cluster: Cluster, manifest: Obj) -> list[Obj] | None:
    """The live children when every rendered child is live with its rendered content."""
    found = []
    for child in rendered(manifest):
        meta = child["metadata"]
        live = cluster.get(child["kind"], meta["namespace"], meta["name"])
        if not is_subset(child, live):
            return None
        found.append(live)
    return found


def children(cluster: Cluster, namespace: str) -> list[Obj]:
    return [obj for kind in CHILD_KINDS for obj in cluster.list(kind, namespace)]


def status(cluster: Cluster, namespace: str, name: str) -> Obj:
    return (cluster.get("DeepSeekDeployment", namespace, name) or {}).get("status") or {}


def condition(cluster: Cluster, namespace: str, name: str, kind: str = "Ready") -> Obj:
    found = status(cluster, namespace, name).get("conditions") or []
    return next((c for c in found if c["type"] == kind), {})


def reconciles() -> float:
    sample = prometheus_client.REGISTRY.get_sample_value
    return sum(
        sample("r1_operator_reconciles_total", {"result": r}) or 0
        for r in ("ok", "invalid", "waiting", "error")
    )


def test_create_makes_every_rendered_child_owned_and_labelled(r1: Cluster, ns: str) -> None:
    manifest = example("deepseek.yaml", ns)
    dsd = r1.create(manifest)
    live = wait_for(lambda: converged(r1, manifest), what="every child")
    assert sorted(o["kind"] for o in children(r1, ns)) == sorted(o["kind"] for o in live)
    for obj in live:
        meta, name = obj["metadata"], manifest["metadata"]["name"]
        assert meta["labels"][labels.DEPLOYMENT] == name
        assert meta["labels"][labels.MANAGED_BY] == labels.FIELD_MANAGER
        owners = meta.get("ownerReferences") or []
        if meta["labels"].get(labels.RETAIN) == "true":
            assert owners == [], f"retained {meta['name']} must outlive the deployment"
        else:
            assert [(o["kind"], o["uid"], o["controller"]) for o in owners] == [
                ("DeepSeekDeployment", dsd["metadata"]["uid"], True)
            ]


def test_update_patches_replicas_image_and_engine_settings_and_prunes(r1: Cluster, ns: str) -> None:
    manifest = example("deepseek.yaml", ns)
    name = manifest["metadata"]["name"]
    r1.create(manifest)
    before = wait_for(lambda: converged(r1, manifest), what="first convergence")
    uids = {(o["kind"], o["metadata"]["name"]): o["metadata"]["uid"] for o in before}
    patch = {
        "spec": {
            "replicas": 2,
            "image": {"tag": "v9.9.9"},
            "engine": {"maxNumSeqs": 32},
            "autoscaling": None,
        }
    }
    r1.patch("DeepSeekDeployment", ns, name, patch)
    updated = merge_patch(manifest, patch)
    after = wait_for(lambda: converged(r1, updated), what="the update")
    deployment = next(o for o in after if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v9.9.9")
    wait_for(lambda: not r1.list("HorizontalPodAutoscaler", ns), what="the HPA pruned")
    assert all(
        uids.get((o["kind"], o["metadata"]["name"]), o["metadata"]["uid"]) == o["metadata"]["uid"]
        for o in after
    )


def test_a_deleted_child_comes_back_within_the_drift_interval(r1: Cluster, ns: str) -> None:
    manifest = make_manifest(namespace=ns)
    r1.create(manifest)
    wait_for(lambda: converged(r1, manifest), what="convergence")
    r1.delete("Service", ns, "r1")
    r1.delete("Deployment", ns, "r1")
    wait_for(lambda: converged(r1, manifest), timeout=DRIFT + 3, what="the children back")


def test_an_edited_managed_field_is_corrected(r1: Cluster, ns: str) -> None:
    manifest = make_manifest(namespace=ns)
    r1.create(manifest)
    wait_for(lambda: converged(r1, manifest), what="convergence")
    r1.patch("Deployment", ns, "r1", {"spec": {"replicas": 5}})
    config = r1.get("ConfigMap", ns, "r1-runtime")
    key = next(iter(config["data"]))
    r1.patch("ConfigMap", ns, "r1-runtime", {"data": {key: "edited by hand"}})
    wait_for(lambda: converged(r1, manifest), timeout=DRIFT + 3, what="the edits undone")


def test_status_and_conditions_follow_the_workload_to_ready(r1: Cluster, ns: str) -> None:
    manifest = make_manifest(namespace=ns)
    r1.create(manifest)
    wait_for(lambda: converged(r1, manifest), what="convergence")
    wait_for(lambda: condition(r1, ns, "r1").get("reason") == "ClaimsPending", what="ClaimsPending")
    for pvc in r1.list("PersistentVolumeClaim", ns):
        r1.set_status("PersistentVolumeClaim", ns, pvc["metadata"]["name"], phase="Bound")
    generation = r1.get("Deployment", ns, "r1")["metadata"]["generation"]
    r1.set_status(
        "Deployment",
        ns,
        "r1",
        observedGeneration=generation,
        replicas=1,
        updatedReplicas=1,
        readyReplicas=0,
    )
    wait_for(lambda: status(r1, ns, "r1").get("phase") == "Building", what="Building")
    r1.set_status("Deployment", ns, "r1", readyReplicas=1, availableReplicas=1)
    wait_for(lambda: status(r1, ns, "r1").get("phase") == "Ready", what="Ready")
    ready, dsd = condition(r1, ns, "r1"), r1.get("DeepSeekDeployment", ns, "r1")
    assert (ready["status"], ready["reason"]) == ("True", "ReplicasReady")
    assert ready["observedGeneration"] == dsd["metadata"]["generation"]
    assert condition(r1, ns, "r1", "Available")["status"] == "True"
    assert status(r1, ns, "r1")["readyReplicas"] == 1
    assert status(r1, ns, "r1")["endpoint"] == f"http://r1.{ns}.svc:8000/v1"
    wait_for(
        lambda: any(e["reason"] == "Ready" for e in r1.events(ns, "r1")), what="the Ready event"
    )


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        pytest.param(
            {"engine": {"backend": "onnx"}},
            "InvalidSpec",
            "spec.engine.backend",
            id="a value the schema would refuse (an object stored under an older CRD)",
        ),
        pytest.param(
            {
                "model": {"name": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"},
                "resources": {"gpuProduct": "NVIDIA-A10"},
            },
            "Unschedulable",
            "",
            id="a model too big for the GPUs",
        ),
    ],
)
def test_a_refused_spec_is_a_condition_and_a_warning_event_with_no_children(
    r1: Cluster, ns: str, overrides: Obj, reason: str, field: str
) -> None:
    r1.create(make_manifest(overrides, namespace=ns))
    ready = wait_for(
        lambda: condition(r1, ns, "r1").get("reason") == reason and condition(r1, ns, "r1"),
        what=reason,
    )
    assert ready["status"] == "False" and field in ready["message"]
    assert status(r1, ns, "r1")["phase"] == "Failed"
    warnings = wait_for(
        lambda: [e for e in r1.events(ns, "r1") if e["type"] == "Warning"], what="a Warning"
    )
    assert [e["reason"] for e in warnings] == [reason]
    mark, runs = r1.write_mark(), reconciles()
    wait_for(lambda: reconciles() >= runs + 2, what="two more reconciles (timer)")
    assert children(r1, ns) == [] and r1.writes_since(mark) == []


def test_multi_node_without_the_leaderworkerset_api_waits_with_a_clear_condition(
    r1: Cluster, ns: str
) -> None:
    manifest = example("deepseek-r1-671b.yaml", ns)
    name = manifest["metadata"]["name"]
    r1.create(manifest)
    ready = wait_for(
        lambda: (
            condition(r1, ns, name).get("reason") == "LeaderWorkerSetMissing"
            and condition(r1, ns, name)
        ),
        what="LeaderWorkerSetMissing",
    )
    assert ready["status"] == "False" and "leaderworkerset" in ready["message"].lower()
    assert status(r1, ns, name)["phase"] == "Pending" and children(r1, ns) == []
    r1.server.serve_leaderworkersets(True)
    try:
        live = wait_for(lambda: converged(r1, manifest), timeout=DRIFT + 5, what="the children")
        assert "LeaderWorkerSet" in {obj["kind"] for obj in live}
        wait_for(lambda: status(r1, ns, name).get("phase") == "Provisioning", what="Provisioning")
    finally:
        r1.server.serve_leaderworkersets(False)


def test_injected_conflicts_and_server_errors_are_retried_without_duplicates(
    r1: Cluster, ns: str
) -> None:
    r1.server.fail("PATCH", "deployments", 409, times=1)
    r1.server.fail("PATCH", "services", 500, times=1)
    r1.server.fail("PATCH", "deepseekdeployments", 500, times=1)
    manifest = make_manifest(namespace=ns)
    mark = r1.write_mark()
    r1.create(manifest)
    wait_for(
        lambda: converged(r1, manifest) and status(r1, ns, "r1").get("phase"),
        timeout=15,
        what="convergence despite faults",
    )
    assert r1.server.pending_faults() == 0
    assert [o["metadata"]["name"] for o in r1.list("Deployment", ns)] == ["r1"]
    assert [o["metadata"]["name"] for o in r1.list("Service", ns)] == ["r1"]
    applies = [
        w
        for w in r1.writes_since(mark)
        if w.method == "PATCH" and w.path.endswith("/deployments/r1")
    ]
    assert len(applies) >= 2


@pytest.mark.slow
def test_a_no_op_reconcile_makes_no_write_call(r1: Cluster, ns: str) -> None:
    manifest = make_manifest(namespace=ns)
    r1.create(manifest)
    wait_for(lambda: converged(r1, manifest), what="convergence")
    r1.wait_quiet(DRIFT)
    mark, runs = r1.write_mark(), reconciles()
    wait_for(lambda: reconciles() >= runs + 3, timeout=3 * DRIFT + 3, what="three timer reconciles")
    assert r1.writes_since(mark) == []


def test_delete_removes_children_but_keeps_retained_claims(r1: Cluster, ns: str) -> None:
    manifest = make_manifest(namespace=ns)
    r1.create(manifest)
    wait_for(lambda: converged(r1, manifest), what="convergence")
    retained = {
        o["metadata"]["name"] for o in r1.list("PersistentVolumeClaim", ns, f"{labels.RETAIN}=true")
    }
    assert retained == {"r1-hot", "r1-warm"}
    r1.delete("DeepSeekDeployment", ns, "r1")
    wait_for(lambda: r1.get("DeepSeekDeployment", ns, "r1") is None, what="the deployment gone")
    expected = {("PersistentVolumeClaim", name) for name in retained}

    def left() -> set[tuple[str, str]]:
        return {(obj["kind"], obj["metadata"]["name"]) for obj in children(r1, ns)}

    wait_for(lambda: left() == expected, what="only the retained claims left", show=left)


def test_a_deployment_deleted_during_a_reconcile_is_not_a_handler_failure(
    r1: Cluster, ns: str
) -> None:
    manifest = make_manifest(namespace=ns)
    r1.create(manifest)
    wait_for(lambda: converged(r1, manifest), what="convergence")
    r1.wait_quiet(DRIFT)
    before = len(FAILURES.messages)
    # The next write to the DeepSeekDeployment finds it gone, as after a concurrent delete.
    r1.server.fail("PATCH", "deepseekdeployments", 404)
    r1.set_status("Deployment", ns, "r1", replicas=1, updatedReplicas=1, observedGeneration=1)
    wait_for(lambda: r1.server.pending_faults() == 0, what="the status patch")
    r1.wait_quiet(DRIFT / 2)
    assert FAILURES.messages[before:] == []


def test_the_api_server_never_failed_on_its_own(r1: Cluster) -> None:
    """Runs last: beyond injected faults, no request of the whole module was answered with
    a server error. (A 422 is fine: kopf's JSON patches test the resourceVersion, and a
    concurrent write makes that test fail, as on a real server; kopf then retries.)"""
    errors = dict(r1.server.errors_by_status)
    assert not {code for code in errors if code >= 500}, errors
    assert set(errors) <= {404, 409, 422}, errors
