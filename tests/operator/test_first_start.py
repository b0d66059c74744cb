"""Status from pods and the pre-build Job: ModelCached, EngineBuilt, the Provisioning and
Building phases, the engine cache key; still pure, and still no patch when nothing moved."""

from __future__ import annotations

import json
from typing import Any

import pytest
from factories import make_manifest
from r1_operator import first_start, labels, status
from r1_operator.api import DeepSeekDeployment, DeepSeekDeploymentStatus, Phase

T0, T1 = "2025-01-01T00:00:00Z", "2025-01-01T00:05:00Z"
KEY = "9f" * 32
JOB = "r1-prebuild-0123abcd"
Obj = dict[str, Any]


def make_pod(
    stage: str,
    component: str = "server",
    job: str | None = None,
    build_message: str | None = None,
    exit_code: int = 0,
    waiting: str | None = None,
) -> Obj:
    """A pod as the kubelet reports it at `stage`: fetching, building, ready, pending or
    done (a build container that terminated with `exit_code` and `build_message`)."""
    pod_labels = labels.common_labels("r1", component)
    if job:
        pod_labels[first_start.JOB_NAME_LABEL] = job
    main = "build" if component == "prebuild" else "runtime"
    fetch_state: Obj = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    main_state: Obj = {"running": {"startedAt": T0}}
    if stage == "fetching":
        fetch_state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
        main_state = {"waiting": {"reason": "PodInitializing"}}
    if stage == "done":
        main_state = {"terminated": {"exitCode": exit_code, "message": build_message or ""}}
    pod_status: Obj = {
        "conditions": [{"type": "Ready", "status": "True" if stage == "ready" else "False"}],
        "initContainerStatuses": [{"name": "fetch", "state": fetch_state}],
        "containerStatuses": [{"name": main, "ready": stage == "ready", "state": main_state}],
    }
    if stage == "pending":
        pod_status = {"phase": "Pending"}
    meta = {"name": f"{component}-{stage}", "labels": pod_labels}
    return {"metadata": meta, "status": pod_status}


def make_job(state: str = "running", message: str = "") -> Obj:
    conditions = {
        "running": [],
        "succeeded": [{"type": "Complete", "status": "True"}],
        "failed": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": message or "Job has reached the specified backoff limit"}],
    }[state]  # fmt: skip
    return {"kind": "Job", "metadata": {"name": JOB}, "status": {"conditions": conditions}}


def starting_workload() -> Obj:
    """A Deployment whose one replica is up to date and not ready: ReplicasStarting."""
    live = {"replicas": 1, "readyReplicas": 0, "updatedReplicas": 1, "observedGeneration": 1}
    return {"kind": "Deployment", "metadata": {"name": "r1", "generation": 1}, "status": live}


def observe(**overrides: Any) -> DeepSeekDeploymentStatus:
    inputs: Obj = {
        "previous": None,
        "generation": 1,
        "dsd": DeepSeekDeployment.from_manifest(make_manifest()),
        "workload": starting_workload(),
        "pvcs": [],
        "now": T0,
    }
    return status.observe(**{**inputs, **overrides})


def conditions(result: DeepSeekDeploymentStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in result.conditions}


BUILT = json.dumps({"engineCacheKey": KEY, "entry": f"/cache/engines/{KEY}", "built": True})


@pytest.mark.parametrize(
    ("pods", "phase", "model_cached", "engine_built"),
    [
        pytest.param(
            [make_pod("fetching")],
            Phase.PROVISIONING,
            ("False", "Fetching"),
            ("Unknown", "WaitingForModel"),
            id="a pod fetching the weights is Provisioning, ModelCached False Fetching",
        ),
        pytest.param(
            [make_pod("fetching", waiting="CrashLoopBackOff")],
            Phase.PROVISIONING,
            ("False", "Fetching"),
            ("Unknown", "WaitingForModel"),
            id="a fetch in a crash loop is still Fetching",
        ),
        pytest.param(
            [make_pod("building")],
            Phase.BUILDING,
            ("True", "Fetched"),
            ("False", "Building"),
            id="init done and the runtime not ready is Building, EngineBuilt False",
        ),
        pytest.param(
            [make_pod("fetching"), make_pod("building")],
            Phase.BUILDING,
            ("True", "Fetched"),
            ("False", "Building"),
            id="the most advanced pod counts",
        ),
        pytest.param(
            [make_pod("building"), make_pod("ready")],
            Phase.BUILDING,
            ("True", "Fetched"),
            ("True", "EngineReady"),
            id="any ready pod means EngineBuilt True",
        ),
        pytest.param(
            [make_pod("pending")],
            Phase.BUILDING,
            None,
            None,
            id="pods not started yet set neither condition",
        ),
    ],
)
def test_serving_pods(
    pods: list[Obj],
    phase: Phase,
    model_cached: tuple[str, str] | None,
    engine_built: tuple[str, str] | None,
) -> None:
    result = observe(pods=pods)
    found = conditions(result)
    assert result.phase == phase
    assert found.get(first_start.MODEL_CACHED) == model_cached
    assert found.get(first_start.ENGINE_BUILT) == engine_built


def test_the_fetch_waiting_reason_reaches_the_condition_message() -> None:
    result = observe(pods=[make_pod("fetching", waiting="CrashLoopBackOff")])
    cached = next(c for c in result.conditions if c.type == first_start.MODEL_CACHED)
    assert "CrashLoopBackOff" in cached.message


def test_pods_without_a_condition_change_keep_the_last_ones() -> None:
    first = observe(pods=[make_pod("ready")])
    raw = first.model_dump(mode="json", by_alias=True, exclude_none=True)
    again = observe(previous=raw, pods=[], now=T1)
    assert conditions(again)[first_start.ENGINE_BUILT] == ("True", "EngineReady")
    assert status.status_patch(raw, again) is None


def test_an_unchanged_pod_stage_patches_nothing() -> None:
    first = observe(pods=[make_pod("building")])
    raw = first.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert status.status_patch(raw, observe(previous=raw, pods=[make_pod("building")])) is None


def test_build_pods_do_not_count_as_serving_pods() -> None:
    result = observe(pods=[make_pod("building", component="prebuild", job=JOB)])
    assert first_start.ENGINE_BUILT not in conditions(result)


# --- the pre-build Job --------------------------------------------------------------------


def prebuilt(job: Obj, pods: list[Obj], **overrides: Any) -> DeepSeekDeploymentStatus:
    return observe(prebuild_job=job, pods=pods, **{"workload": None, **overrides})


def test_a_running_prebuild_holds_the_rollout() -> None:
    fetching = prebuilt(make_job(), [make_pod("fetching", "prebuild", JOB)])
    building = prebuilt(make_job(), [make_pod("building", "prebuild", JOB)])
    assert (fetching.phase, building.phase) == (Phase.PROVISIONING, Phase.BUILDING)
    for result in (fetching, building):
        ready = next(c for c in result.conditions if c.type == status.READY)
        assert (ready.status, ready.reason) == ("False", first_start.PREBUILDING)
        assert JOB in ready.message
    assert conditions(building)[first_start.ENGINE_BUILT] == ("False", "Building")
    assert conditions(fetching)[first_start.MODEL_CACHED] == ("False", "Fetching")


def test_a_succeeded_prebuild_reports_the_engine_cache_key() -> None:
    done = make_pod("done", "prebuild", JOB, build_message=BUILT)
    result = prebuilt(make_job("succeeded"), [done], workload=starting_workload())
    assert result.engine_cache_key == KEY
    assert conditions(result)[first_start.ENGINE_BUILT] == ("True", first_start.PREBUILT)
    assert result.phase == Phase.BUILDING  # the workload now rolls out


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("not json", id="a message that is not JSON"),
        pytest.param('{"engineCacheKey": 7}', id="a key that is not a string"),
        pytest.param("", id="no message"),
    ],
)
def test_an_unreadable_result_keeps_the_previous_key(message: str) -> None:
    done = make_pod("done", "prebuild", JOB, build_message=message)
    result = prebuilt(make_job("succeeded"), [done], previous={"engineCacheKey": "old"})
    assert result.engine_cache_key == "old"
    assert conditions(result)[first_start.ENGINE_BUILT] == ("True", first_start.PREBUILT)


def test_a_failed_prebuild_fails_the_deployment_with_the_builds_message() -> None:
    crashed = make_pod("done", "prebuild", JOB, build_message="CUDA out of memory", exit_code=1)
    result = prebuilt(make_job("failed"), [crashed])
    ready = next(c for c in result.conditions if c.type == status.READY)
    progressing = next(c for c in result.conditions if c.type == status.PROGRESSING)
    assert result.phase == Phase.FAILED
    assert (ready.reason, progressing.status) == (first_start.PREBUILD_FAILED, "False")
    assert "backoff limit" in ready.message and "CUDA out of memory" in ready.message
    assert conditions(result)[first_start.ENGINE_BUILT] == ("False", first_start.PREBUILD_FAILED)


def test_pods_of_another_job_are_not_read() -> None:
    other = make_pod("done", "prebuild", "r1-prebuild-ffffffff", build_message=BUILT)
    result = prebuilt(make_job("succeeded"), [other])
    assert result.engine_cache_key is None
