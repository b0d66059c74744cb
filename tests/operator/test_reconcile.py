"""reconcile() against an in-memory API with the same methods as Kube: what it writes,
what it prunes, what it leaves alone. The same behaviour over real HTTP with real kopf
lives in test_operator.py."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
from factories import make_manifest
from r1_operator import labels
from r1_operator.kube import POD, Kind, Manifest
from r1_operator.reconcile import LeaderWorkerSetMissingError, reconcile
from r1_operator.validation import InvalidSpecError

NOW = "2026-11-29T00:00:00Z"
UID = "uid-r1"


@dataclass
class FakeKube:
    """Objects by (kind, name); every write is logged as (verb, kind, name)."""

    objects: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    writes: list[tuple[str, str, str]] = field(default_factory=list)
    status: Manifest = field(default_factory=dict)
    apis: set[str] = field(default_factory=lambda: {"Deployment"})

    def get(self, kind: Kind, namespace: str, name: str) -> Manifest | None:
        return self.objects.get((kind.kind, name))

    def list_children(self, kind: Kind, namespace: str, owner: str) -> list[Manifest]:
        return [
            copy.deepcopy({k: v for k, v in obj.items() if k != "kind"})
            for (k, _), obj in self.objects.items()
            if k == kind.kind and obj["metadata"]["labels"].get(labels.DEPLOYMENT) == owner
        ]

    def list_pods(self, namespace: str, owner: str) -> list[Manifest]:
        return self.list_children(POD, namespace, owner)

    def apply(self, manifest: Manifest) -> Manifest:
        self.writes.append(("apply", manifest["kind"], manifest["metadata"]["name"]))
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = copy.deepcopy(manifest)
        return copy.deepcopy(manifest)

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        self.writes.append(("delete", kind.kind, name))
        self.objects.pop((kind.kind, name), None)

    def patch_status(self, namespace: str, name: str, patch: Manifest) -> None:
        self.writes.append(("status", "DeepSeekDeployment", name))
        self.status.update(patch["status"])

    def has_api(self, kind: Kind) -> bool:
        return kind.kind in self.apis


def make_body(kube: FakeKube, overrides: dict[str, Any] | None = None) -> Manifest:
    body = make_manifest(overrides)
    body["metadata"].update(uid=UID, generation=1)
    body["status"] = copy.deepcopy(kube.status)
    return body


def kinds(kube: FakeKube) -> list[str]:
    return sorted(kind for kind, _ in kube.objects)


def test_first_reconcile_applies_every_child_with_an_owner_and_writes_status() -> None:
    kube = FakeKube()
    result = reconcile(kube, make_body(kube), NOW)
    assert result is not None and result.status_written
    assert kinds(kube) == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "Service",
    ]
    owned = [obj for obj in kube.objects.values() if obj["metadata"].get("ownerReferences")]
    assert {o["metadata"]["ownerReferences"][0]["uid"] for o in owned} == {UID}
    assert kube.status["phase"] == "Provisioning"


def test_second_reconcile_of_an_unchanged_object_makes_no_write() -> None:
    kube = FakeKube()
    reconcile(kube, make_body(kube), NOW)
    kube.writes.clear()
    result = reconcile(kube, make_body(kube), "2026-11-29T00:05:00Z")
    assert kube.writes == []
    assert result is not None and result.applied == () and not result.status_written


def test_a_deleted_child_is_applied_again_and_only_it() -> None:
    kube = FakeKube()
    reconcile(kube, make_body(kube), NOW)
    del kube.objects[("Service", "r1")]
    kube.writes.clear()
    reconcile(kube, make_body(kube), NOW)
    assert kube.writes == [("apply", "Service", "r1")]


def test_an_edited_managed_field_is_corrected() -> None:
    kube = FakeKube()
    reconcile(kube, make_body(kube), NOW)
    kube.objects[("Deployment", "r1")]["spec"]["replicas"] = 7
    kube.writes.clear()
    reconcile(kube, make_body(kube), NOW)
    assert kube.writes == [("apply", "Deployment", "r1")]
    assert kube.objects[("Deployment", "r1")]["spec"]["replicas"] == 1


def test_fields_added_by_the_server_are_not_drift() -> None:
    kube = FakeKube()
    reconcile(kube, make_body(kube), NOW)
    deployment = kube.objects[("Deployment", "r1")]
    deployment["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "1"}
    deployment["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    deployment["status"] = {"replicas": 1}
    kube.writes.clear()
    reconcile(kube, make_body(kube), NOW)
    assert [w for w in kube.writes if w[0] == "apply"] == []


def test_children_no_longer_rendered_are_pruned_but_retained_claims_stay() -> None:
    kube = FakeKube()
    reconcile(kube, make_body(kube, {"replicas": 2}), NOW)
    assert ("PodDisruptionBudget", "r1") in kube.objects
    tiers = {"hot": {"existingClaim": "weights"}, "cold": {"existingClaim": "logs"}}
    reconcile(kube, make_body(kube, {"replicas": 1, "storage": tiers}), NOW)
    deletes = sorted(name for verb, _, name in kube.writes if verb == "delete")
    # The hot claim is Retain (kept, no owner reference); the cold one is Delete (pruned).
    assert deletes == ["r1", "r1-cold"]
    hot = kube.objects[("PersistentVolumeClaim", "r1-hot")]
    assert "ownerReferences" not in hot["metadata"]


def test_an_invalid_spec_writes_a_failed_status_and_touches_no_child() -> None:
    kube = FakeKube()
    with pytest.raises(InvalidSpecError):
        reconcile(kube, make_body(kube, {"resources": {"gpus": -1}}), NOW)
    assert kube.objects == {}
    assert kube.status["phase"] == "Failed"
    ready = next(c for c in kube.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.resources.gpus" in ready["message"]


def test_multi_node_without_the_leaderworkerset_api_is_a_condition_not_a_crash() -> None:
    kube = FakeKube()
    multi = {"resources": {"gpus": 8}, "parallelism": {"tensor": 8, "pipeline": 2, "nodes": 2}}
    with pytest.raises(LeaderWorkerSetMissingError):
        reconcile(kube, make_body(kube, multi), NOW)
    assert kube.objects == {}
    ready = next(c for c in kube.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "LeaderWorkerSetMissing"


def test_an_object_being_deleted_is_left_alone() -> None:
    kube = FakeKube()
    body = make_body(kube)
    body["metadata"]["deletionTimestamp"] = NOW
    assert reconcile(kube, body, NOW) is None
    assert kube.writes == []


# --- the pre-build Job --------------------------------------------------------------------

PREBUILD = {"engine": {"prebuild": True}}


def finish_job(kube: FakeKube, message: str) -> str:
    """Play the Job controller and the kubelet: the Job completes, its pod holds `message`."""
    name = next(name for kind, name in kube.objects if kind == "Job")
    kube.objects[("Job", name)]["status"] = {
        "conditions": [{"type": "Complete", "status": "True"}],
        "succeeded": 1,
    }
    pod_labels = {labels.DEPLOYMENT: "r1", labels.COMPONENT: "prebuild", "job-name": name}
    terminated = {"exitCode": 0, "message": message}
    kube.objects[("Pod", f"{name}-x")] = {
        "kind": "Pod",
        "metadata": {"name": f"{name}-x", "labels": pod_labels},
        "status": {"containerStatuses": [{"name": "build", "state": {"terminated": terminated}}]},
    }
    return name


def test_the_workload_waits_for_the_prebuild_job_then_rolls_out() -> None:
    kube = FakeKube()
    reconcile(kube, make_body(kube, PREBUILD), NOW)
    assert "Job" in kinds(kube) and "Deployment" not in kinds(kube)
    assert (kube.status["phase"], kube.status["conditions"][0]["reason"]) == (
        "Building",
        "Prebuilding",
    )
    finish_job(kube, '{"engineCacheKey": "abc", "entry": "/cache/engines/abc", "built": true}')
    kube.writes.clear()
    reconcile(kube, make_body(kube, PREBUILD), NOW)
    assert ("apply", "Deployment", "r1") in kube.writes
    assert kube.status["engineCacheKey"] == "abc"
    kube.writes.clear()
    reconcile(kube, make_body(kube, PREBUILD), NOW)
    assert kube.writes == []


def test_a_new_engine_setting_keeps_the_old_workload_until_its_job_succeeds() -> None:
    kube = FakeKube()
    reconcile(kube, make_body(kube, PREBUILD), NOW)
    old_job = finish_job(kube, '{"engineCacheKey": "abc"}')
    reconcile(kube, make_body(kube, PREBUILD), NOW)
    serving = copy.deepcopy(kube.objects[("Deployment", "r1")])
    kube.writes.clear()
    changed = {"engine": {"prebuild": True, "maxNumSeqs": 16}}
    reconcile(kube, make_body(kube, changed), NOW)
    applied = [(kind, name) for verb, kind, name in kube.writes if verb == "apply"]
    assert [kind for kind, _ in applied] == ["Job"] and applied[0][1] != old_job
    assert ("delete", "Job", old_job) in kube.writes
    assert kube.objects[("Deployment", "r1")] == serving
    assert kube.status["phase"] == "Building"
