"""deploy/argocd/health.lua run as Argo CD runs it (Lua 5.1, the resource in the global `obj`,
the script's return value is the health) on statuses that the operator's own status code
(r1_operator.status) produces, written the way the operator writes them (`status_patch`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from argocd_support import SCRIPT, health
from factories import make_manifest
from kube_emulator import merge_patch
from r1_operator import status
from r1_operator.api import DeepSeekDeployment
from r1_operator.validation import InvalidSpecError, validate

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "deploy" / "argocd"
HEALTH_KEY = "resource.customizations.health.r1-operator.dev_DeepSeekDeployment"
T0 = "2026-01-01T00:00:00Z"
Obj = dict[str, Any]


def workload(ready: int, replicas: int = 1, updated: int | None = None, **extra: Any) -> Obj:
    """A live Deployment whose controller has seen generation 1 and reports these counts."""
    live = {"replicas": replicas, "readyReplicas": ready, "observedGeneration": 1}
    live["updatedReplicas"] = replicas if updated is None else updated
    return {"kind": "Deployment", "metadata": {"generation": 1}, "status": live | extra}


BOUND = [{"metadata": {"name": f"r1-{t}"}, "status": {"phase": "Bound"}} for t in ("hot", "warm")]
STALLED = {
    "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
    ]
}


def refused(overrides: Obj) -> InvalidSpecError:
    """The operator's own validation error for a manifest with these spec overrides."""
    with pytest.raises(InvalidSpecError) as caught:
        validate(make_manifest(overrides))
    return caught.value


def resource(
    generation: int = 1, previous: Obj | None = None, spec: Obj | None = None, **inputs: Any
) -> Obj:
    """The DeepSeekDeployment as Argo CD would read it: the factories' manifest with `spec`
    overrides, and the status the operator writes after `status.observe(**inputs)` on top of
    `previous`."""
    manifest = make_manifest(spec)
    manifest["metadata"]["generation"] = generation
    valid = None if "error" in inputs else DeepSeekDeployment.from_manifest(manifest)
    inputs.setdefault("dsd", valid)
    new = status.observe(previous=previous, generation=generation, now=T0, **inputs)
    patch = status.status_patch(previous, new)
    assert patch is not None
    manifest["status"] = merge_patch(previous or {}, patch["status"])
    return manifest


FROM_THE_OPERATOR = [
    pytest.param(
        {"workload": workload(ready=1), "pvcs": BOUND},
        "Healthy",
        "ReplicasReady",
        id="all replicas ready at the current generation is Healthy",
    ),
    pytest.param(
        {"spec": {"replicas": 0}, "workload": {}},
        "Healthy",
        "ScaledToZero",
        id="scaled to zero is Healthy",
    ),
    pytest.param(
        {"workload": None}, "Progressing", "WorkloadPending", id="no workload yet is Progressing"
    ),
    pytest.param(
        {"workload": workload(ready=0), "pvcs": BOUND},
        "Progressing",
        "ReplicasStarting",
        id="pods fetching weights and building the engine is Progressing",
    ),
    pytest.param(
        {"workload": workload(ready=1, replicas=2, updated=1), "pvcs": BOUND},
        "Progressing",
        "RollingOut",
        id="a rolling update with an old replica left is Progressing",
    ),
    pytest.param(
        {"workload": workload(ready=0), "pvcs": [{"metadata": {"name": "r1-hot"}}]},
        "Progressing",
        "ClaimsPending",
        id="claims not bound yet is Progressing",
    ),
    pytest.param(
        {
            "spec": {"resources": {"gpus": 1}, "parallelism": {"tensor": 2, "nodes": 2}},
            "lws_missing": True,
        },
        "Progressing",
        "LeaderWorkerSetMissing",
        id="multi-node waiting for the LeaderWorkerSet API is Progressing",
    ),
    pytest.param(
        {"error": refused({"engine": {"backend": "onnx"}})},
        "Degraded",
        "InvalidSpec",
        id="an invalid spec is Degraded",
    ),
    pytest.param(
        {
            "error": refused(
                {
                    "model": {"name": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"},
                    "resources": {"gpuProduct": "NVIDIA-A10"},
                }
            )
        },
        "Degraded",
        "Unschedulable",
        id="a model too big for its GPUs is Degraded",
    ),
    pytest.param(
        {"workload": workload(ready=0, **STALLED), "pvcs": BOUND},
        "Degraded",
        "ProgressDeadlineExceeded",
        id="a rollout past its deadline is Degraded",
    ),
]


@pytest.mark.parametrize(("inputs", "expected", "reason"), FROM_THE_OPERATOR)
def test_health_of_statuses_the_operator_writes(inputs: Obj, expected: str, reason: str) -> None:
    obj = resource(**inputs)
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == reason, "the operator no longer produces this case"
    found, message = health(obj)
    assert found == expected
    assert reason in message and obj["status"]["phase"] in message


def test_a_replica_lost_after_ready_is_degraded() -> None:
    two = {"spec": {"replicas": 2}, "pvcs": BOUND}
    was_ready = resource(workload=workload(ready=2, replicas=2), **two)["status"]
    obj = resource(previous=was_ready, workload=workload(ready=1, replicas=2), **two)
    assert obj["status"]["phase"] == "Degraded"
    assert health(obj)[0] == "Degraded" and "ReplicasLost" in health(obj)[1]


def test_a_spec_change_is_progressing_until_observed_then_rolls_out_to_healthy() -> None:
    ready = resource(workload=workload(ready=1), pvcs=BOUND)
    assert health(ready)[0] == "Healthy"
    edited = copy.deepcopy(ready)
    edited["metadata"]["generation"] = 2  # Argo CD synced a new spec; no reconcile yet
    found, message = health(edited)
    assert found == "Progressing" and "generation 2" in message
    old_pod_left = workload(ready=1, replicas=2, updated=1)
    rolling = resource(2, ready["status"], workload=old_pod_left, pvcs=BOUND)
    assert health(rolling)[0] == "Progressing" and "RollingOut" in health(rolling)[1]
    done = resource(2, rolling["status"], workload=workload(ready=1), pvcs=BOUND)
    assert health(done)[0] == "Healthy"


def test_a_fixed_spec_leaves_degraded_as_soon_as_the_operator_sees_it() -> None:
    failed = resource(error=refused({"engine": {"backend": "onnx"}}))
    assert health(failed)[0] == "Degraded"
    failed["metadata"]["generation"] = 2  # the fix is synced, the stale status says Failed
    assert health(failed)[0] == "Progressing"


READY_TRUE = {"type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "1 of 1"}


def ready_condition(**fields: Any) -> Obj:
    return READY_TRUE | fields


EDGE_CASES = [
    pytest.param({}, 1, "Progressing", "Waiting for the operator", id="no status at all"),
    pytest.param({"status": {}}, 1, "Progressing", "Waiting", id="an empty status"),
    pytest.param(
        {"status": {"phase": "Ready", "conditions": [READY_TRUE]}},
        1,
        "Progressing",
        "generation 1",
        id="a status without observedGeneration (an older operator) is not trusted",
    ),
    pytest.param(
        {"status": {"phase": "Ready", "observedGeneration": 1, "conditions": [READY_TRUE]}},
        2,
        "Progressing",
        "status is of generation 1",
        id="a status behind the generation, its conditions carrying none",
    ),
    pytest.param(
        {
            "status": {
                "phase": "Provisioning",
                "observedGeneration": 1,
                "conditions": [ready_condition(status="False", reason="Unschedulable")],
            }
        },
        1,
        "Degraded",
        "(Unschedulable)",
        id="Ready False Unschedulable whatever the phase",
    ),
    pytest.param(
        {"status": {"phase": "Ready", "observedGeneration": 1}},
        1,
        "Progressing",
        "no Ready condition",
        id="a phase without conditions",
    ),
    pytest.param(
        {"status": {"phase": "Ready", "observedGeneration": 3, "conditions": []}},
        3,
        "Progressing",
        "no Ready condition",
        id="an empty condition list",
    ),
    pytest.param(
        {
            "status": {
                "phase": "Ready",
                "observedGeneration": 2,
                "conditions": [ready_condition(observedGeneration=1)],
            }
        },
        2,
        "Progressing",
        "Ready condition of generation 2",
        id="a Ready condition older than the status",
    ),
    pytest.param(
        {
            "status": {
                "phase": "Building",
                "observedGeneration": 1,
                "conditions": [ready_condition(status="Unknown", reason="", message="")],
            }
        },
        1,
        "Progressing",
        "Phase Building",
        id="Ready Unknown with no reason or message",
    ),
    pytest.param(
        {
            "status": {
                "phase": "SomethingNew",
                "observedGeneration": 1,
                "conditions": [ready_condition(status="False", reason="Whatever")],
            }
        },
        1,
        "Progressing",
        "SomethingNew (Whatever)",
        id="an unknown phase with Ready False for another reason",
    ),
    pytest.param(
        {
            "status": {
                "phase": "Failed",
                "observedGeneration": 4,
                "conditions": [ready_condition(status="False", reason="InvalidSpec", message="")],
            }
        },
        4,
        "Degraded",
        "Phase Failed (InvalidSpec)",
        id="Failed with an empty message still says why",
    ),
    pytest.param(
        {"status": {"phase": "Degraded", "observedGeneration": 1}},
        1,
        "Degraded",
        "Phase Degraded",
        id="Degraded without conditions",
    ),
]


@pytest.mark.parametrize(("extra", "generation", "expected", "message"), EDGE_CASES)
def test_edge_cases(extra: Obj, generation: int, expected: str, message: str) -> None:
    obj = make_manifest() | extra
    obj["metadata"]["generation"] = generation
    found, said = health(obj)
    assert (found, message in said) == (expected, True), said


def test_a_resource_without_metadata_generation_is_read_as_generation_0() -> None:
    obj = make_manifest() | {"status": {"phase": "Ready", "observedGeneration": 1}}
    obj["status"]["conditions"] = [READY_TRUE]
    assert health(obj)[0] == "Healthy"


def test_the_argocd_cm_snippet_embeds_exactly_health_lua() -> None:
    config = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert (config["kind"], config["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert config["data"][HEALTH_KEY] == SCRIPT, "paste deploy/argocd/health.lua under the key"
    assert config["data"]["application.resourceTrackingMethod"] == "annotation"


def test_the_application_ignores_replicas_an_hpa_owns_and_respects_that_on_sync() -> None:
    app = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert {"group": "r1-operator.dev", "kind": "DeepSeekDeployment"}.items() <= (
        app["spec"]["ignoreDifferences"][0].items()
    )
    assert app["spec"]["ignoreDifferences"][0]["jsonPointers"] == ["/spec/replicas"]
    options = app["spec"]["syncPolicy"]["syncOptions"]
    assert {"ServerSideApply=true", "RespectIgnoreDifferences=true"} <= set(options)
    examples = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in ROOT.glob("examples/*")}
    assert app["metadata"]["name"] not in examples, "see the comment on metadata.name"
