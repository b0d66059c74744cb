"""First start over real HTTP with real kopf: status follows the pods' stages and the
pre-build Job, the workload waits for the Job, and the engine cache key reaches status.

The drift timer is slowed to a minute here, so every status change below comes from a
watch event (pods, Jobs, Deployments), not from the timer. There are no controllers: tests
create the pods and set the statuses the Job controller and the kubelet would.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from factories import make_manifest
from operator_harness import Cluster, load_handlers, pytest_env, running_operator, wait_for
from r1_operator import labels

NAMESPACES = (f"fs{n}" for n in itertools.count())
KEY = "c0ffee" * 10
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def r1(cluster: Cluster) -> Iterator[Cluster]:
    env = pytest_env(R1_OPERATOR_DRIFT_INTERVAL="60", R1_OPERATOR_METRICS_PORT="0")
    with env, running_operator(load_handlers("r1_operator.handlers")):
        yield cluster


@pytest.fixture
def ns(r1: Cluster) -> Iterator[str]:
    namespace = next(NAMESPACES)
    yield namespace
    for dsd in r1.list("DeepSeekDeployment", namespace):
        r1.delete("DeepSeekDeployment", namespace, dsd["metadata"]["name"])
    wait_for(lambda: not r1.list("DeepSeekDeployment", namespace), timeout=20, what="cleanup")


def status(r1: Cluster, ns: str) -> Obj:
    return (r1.get("DeepSeekDeployment", ns, "r1") or {}).get("status") or {}


def condition(r1: Cluster, ns: str, kind: str) -> tuple[str, str] | None:
    found = next((c for c in status(r1, ns).get("conditions", []) if c["type"] == kind), None)
    return (found["status"], found["reason"]) if found else None


def make_pod(r1: Cluster, ns: str, name: str, component: str, **extra_labels: str) -> None:
    """A pod as its controller would create it (labels from its template)."""
    pod_labels = {**labels.common_labels("r1", component), **extra_labels}
    spec = {"containers": [{"name": "runtime", "image": "r1-runtime"}]}
    manifest = {"kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": pod_labels}}
    r1.create({**manifest, "apiVersion": "v1", "spec": spec})


def set_stage(
    r1: Cluster, ns: str, pod: str, stage: str, container: str = "runtime", message: str = ""
) -> None:
    """The kubelet's report for a pod that fetches, builds, is ready, or is done."""
    fetch: Obj = {"terminated": {"exitCode": 0}}
    main: Obj = {"running": {}}
    if stage == "fetching":
        fetch, main = {"running": {}}, {"waiting": {"reason": "PodInitializing"}}
    elif stage == "done":
        main = {"terminated": {"exitCode": 0, "message": message}}
    ready = "True" if stage == "ready" else "False"
    r1.set_status(
        "Pod",
        ns,
        pod,
        conditions=[{"type": "Ready", "status": ready}],
        initContainerStatuses=[{"name": "fetch", "state": fetch}],
        containerStatuses=[{"name": container, "ready": stage == "ready", "state": main}],
    )


def wait_phase(r1: Cluster, ns: str, phase: str, reason: str) -> None:
    def seen() -> bool:
        return status(r1, ns).get("phase") == phase and condition(r1, ns, "Ready") == (
            "False" if phase != "Ready" else "True",
            reason,
        )

    wait_for(seen, what=f"{phase}/{reason}", show=lambda: status(r1, ns))


def test_serving_pods_drive_provisioning_building_and_ready(r1: Cluster, ns: str) -> None:
    r1.create(make_manifest(namespace=ns))
    wait_for(lambda: r1.get("Deployment", ns, "r1"), what="the Deployment")
    for pvc in r1.list("PersistentVolumeClaim", ns):
        r1.set_status("PersistentVolumeClaim", ns, pvc["metadata"]["name"], phase="Bound")
    generation = r1.get("Deployment", ns, "r1")["metadata"]["generation"]
    live = {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1}
    r1.set_status("Deployment", ns, "r1", **live, readyReplicas=0)
    make_pod(r1, ns, "r1-abc", "server")
    set_stage(r1, ns, "r1-abc", "fetching")
    wait_phase(r1, ns, "Provisioning", "Fetching")
    assert condition(r1, ns, "ModelCached") == ("False", "Fetching")
    set_stage(r1, ns, "r1-abc", "building")
    wait_phase(r1, ns, "Building", "Building")
    assert condition(r1, ns, "ModelCached") == ("True", "Fetched")
    assert condition(r1, ns, "EngineBuilt") == ("False", "Building")
    set_stage(r1, ns, "r1-abc", "ready")
    r1.set_status("Deployment", ns, "r1", readyReplicas=1)
    wait_phase(r1, ns, "Ready", "ReplicasReady")
    assert condition(r1, ns, "EngineBuilt") == ("True", "EngineReady")


def finish_prebuild(r1: Cluster, ns: str, job: str, succeeded: bool) -> None:
    pod = f"{job}-x1"
    make_pod(r1, ns, pod, "prebuild", **{"batch.kubernetes.io/job-name": job})
    set_stage(r1, ns, pod, "fetching", container="build")
    wait_phase(r1, ns, "Provisioning", "Prebuilding")
    set_stage(r1, ns, pod, "building", container="build")
    wait_phase(r1, ns, "Building", "Prebuilding")
    if succeeded:
        result = {"engineCacheKey": KEY, "entry": f"/cache/engines/{KEY}", "built": True}
        set_stage(r1, ns, pod, "done", container="build", message=json.dumps(result))
        complete = {"type": "Complete", "status": "True"}
        r1.set_status("Job", ns, job, succeeded=1, conditions=[complete])
    else:
        failed = {"type": "Failed", "status": "True", "message": "backoff limit reached"}
        r1.set_status("Job", ns, job, failed=3, conditions=[failed])


def the_job(r1: Cluster, ns: str) -> str:
    jobs = wait_for(lambda: r1.list("Job", ns), what="the pre-build Job")
    assert len(jobs) == 1 and jobs[0]["metadata"]["name"].startswith("r1-prebuild-")
    return str(jobs[0]["metadata"]["name"])


def test_the_workload_rolls_out_after_the_prebuild_with_its_cache_key(r1: Cluster, ns: str) -> None:
    r1.create(make_manifest({"engine": {"prebuild": True}}, namespace=ns))
    job = the_job(r1, ns)
    wait_for(lambda: status(r1, ns).get("phase"), what="a first status")
    assert r1.get("Deployment", ns, "r1") is None
    finish_prebuild(r1, ns, job, succeeded=True)
    wait_for(lambda: r1.get("Deployment", ns, "r1"), what="the Deployment after the Job")
    wait_for(lambda: status(r1, ns).get("engineCacheKey") == KEY, what="the engine cache key")
    assert condition(r1, ns, "EngineBuilt") == ("True", "Prebuilt")
    r1.wait_quiet(0.5)
    mark = r1.write_mark()
    set_stage(r1, ns, f"{job}-x1", "done", container="build", message="{}")  # same stage
    r1.wait_quiet(0.5)
    assert r1.writes_since(mark) == []


def test_a_failed_prebuild_fails_the_deployment_and_holds_the_workload(
    r1: Cluster, ns: str
) -> None:
    r1.create(make_manifest({"engine": {"prebuild": True}}, namespace=ns))
    finish_prebuild(r1, ns, the_job(r1, ns), succeeded=False)
    wait_phase(r1, ns, "Failed", "PrebuildFailed")
    ready = next(c for c in status(r1, ns)["conditions"] if c["type"] == "Ready")
    assert "backoff limit reached" in ready["message"]
    assert r1.get("Deployment", ns, "r1") is None


@pytest.mark.parametrize("plural", ["pods", "jobs", "deployments"])
def test_children_are_watched_through_a_server_side_selector(r1: Cluster, plural: str) -> None:
    owned = f"{labels.MANAGED_BY}={labels.FIELD_MANAGER}"
    watched = wait_for(lambda: r1.server.watch_selectors.get(plural), what=f"a {plural} watch")
    assert watched == {owned}
