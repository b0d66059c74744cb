"""Status from children: the phase table, conditions that keep their transition times, and
patches that are None when nothing changed (so a no-op reconcile writes nothing)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from factories import make_manifest
from r1_operator import status
from r1_operator.api import Condition, DeepSeekDeployment, DeepSeekDeploymentStatus, Phase
from r1_operator.problems import INVALID_SPEC, UNSCHEDULABLE, Problem
from r1_operator.validation import InvalidSpecError

T0 = "2025-01-01T00:00:00Z"
T1 = "2025-01-01T00:05:00Z"
MULTI_NODE = {"resources": {"gpus": 1}, "parallelism": {"tensor": 2, "nodes": 2}}


def make_dsd(**spec: Any) -> DeepSeekDeployment:
    """The factories' valid deployment `r1` in namespace `ml`, with `spec` overrides."""
    return DeepSeekDeployment.from_manifest(make_manifest(spec))


def make_deployment_status(
    replicas: int = 2,
    ready: int = 2,
    updated: int | None = None,
    observed: int | None = 1,
    generation: int = 1,
    conditions: list[dict[str, Any]] | None = None,
    kind: str = "Deployment",
) -> dict[str, Any]:
    """A live workload with the status its controller would report; `updated` defaults to
    `replicas` and `observed` None leaves status.observedGeneration out."""
    live: dict[str, Any] = {
        "replicas": replicas,
        "readyReplicas": ready,
        "updatedReplicas": replicas if updated is None else updated,
        "conditions": conditions or [],
    }
    if observed is not None:
        live["observedGeneration"] = observed
    return {"kind": kind, "metadata": {"name": "r1", "generation": generation}, "status": live}


def make_pvcs(*phases: str) -> list[dict[str, Any]]:
    tiers = ("hot", "warm", "cold")
    return [
        {"metadata": {"name": f"r1-{tier}"}, "status": {"phase": phase}}
        for tier, phase in zip(tiers, phases, strict=False)
    ]


def observe(**overrides: Any) -> DeepSeekDeploymentStatus:
    """`status.observe` for two replicas on bound claims, unless `overrides` say otherwise."""
    inputs: dict[str, Any] = {
        "previous": None,
        "generation": 1,
        "dsd": make_dsd(replicas=2),
        "workload": make_deployment_status(),
        "pvcs": make_pvcs("Bound", "Bound", "Bound"),
        "now": T0,
    }
    return status.observe(**{**inputs, **overrides})


def previous(phase: Phase, ready: int) -> dict[str, Any]:
    return {"phase": phase.value, "readyReplicas": ready, "replicas": 2}


def condition(result: DeepSeekDeploymentStatus, kind: str) -> Condition:
    return next(c for c in result.conditions if c.type == kind)


STALLED = [
    {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "r1-5d4" has timed out progressing.',
    }
]

PHASES = [
    pytest.param(
        {"workload": None},
        Phase.PROVISIONING,
        status.WORKLOAD_PENDING,
        id="a workload not created yet is Provisioning",
    ),
    pytest.param(
        {"workload": make_deployment_status(ready=0), "pvcs": make_pvcs("Bound", "Pending")},
        Phase.PROVISIONING,
        status.CLAIMS_PENDING,
        id="a claim still Pending with no replica ready is Provisioning",
    ),
    pytest.param(
        {"workload": make_deployment_status(ready=0)},
        Phase.BUILDING,
        status.REPLICAS_STARTING,
        id="bound claims and no replica ready yet is Building",
    ),
    pytest.param(
        {"workload": make_deployment_status(replicas=0, ready=0, observed=None)},
        Phase.BUILDING,
        status.REPLICAS_STARTING,
        id="a new workload its controller has not seen yet is Building",
    ),
    pytest.param(
        {"workload": make_deployment_status(ready=1)},
        Phase.BUILDING,
        status.REPLICAS_STARTING,
        id="one of two replicas ready on first start is Building",
    ),
    pytest.param(
        {},
        Phase.READY,
        status.REPLICAS_READY,
        id="all replicas ready and up to date is Ready",
    ),
    pytest.param(
        {"workload": make_deployment_status(generation=2, observed=1)},
        Phase.BUILDING,
        status.ROLLING_OUT,
        id="all ready but the controller has not seen the new spec is Building",
    ),
    pytest.param(
        {"workload": make_deployment_status(replicas=2, ready=1, updated=1)},
        Phase.BUILDING,
        status.ROLLING_OUT,
        id="a rolling update with an old replica left is Building",
    ),
    pytest.param(
        {"workload": make_deployment_status(ready=1), "previous": previous(Phase.READY, 2)},
        Phase.DEGRADED,
        status.REPLICAS_LOST,
        id="a replica lost after being Ready is Degraded",
    ),
    pytest.param(
        {"workload": make_deployment_status(ready=0), "previous": previous(Phase.READY, 2)},
        Phase.DEGRADED,
        status.REPLICAS_LOST,
        id="every replica lost after being Ready is Degraded",
    ),
    pytest.param(
        {"workload": make_deployment_status(ready=1), "previous": previous(Phase.DEGRADED, 1)},
        Phase.DEGRADED,
        status.REPLICAS_LOST,
        id="Degraded stays Degraded until every replica is back",
    ),
    pytest.param(
        {"previous": previous(Phase.DEGRADED, 1)},
        Phase.READY,
        status.REPLICAS_READY,
        id="Degraded with every replica back is Ready",
    ),
    pytest.param(
        {
            "dsd": make_dsd(replicas=3),
            "workload": make_deployment_status(replicas=3, ready=1),
            "previous": previous(Phase.READY, 1),
        },
        Phase.BUILDING,
        status.REPLICAS_STARTING,
        id="scaling up from Ready is Building, not Degraded",
    ),
    pytest.param(
        {"workload": make_deployment_status(ready=1, updated=1, conditions=STALLED)},
        Phase.DEGRADED,
        status.PROGRESS_DEADLINE_EXCEEDED,
        id="a rollout past its progress deadline is Degraded",
    ),
    pytest.param(
        {"dsd": make_dsd(replicas=0), "workload": make_deployment_status(replicas=0, ready=0)},
        Phase.READY,
        status.SCALED_TO_ZERO,
        id="zero replicas is Ready",
    ),
    pytest.param(
        {
            "dsd": make_dsd(replicas=0),
            "workload": make_deployment_status(replicas=0, ready=0),
            "pvcs": make_pvcs("Pending", "Pending"),
        },
        Phase.READY,
        status.SCALED_TO_ZERO,
        id="zero replicas is Ready even with claims waiting for a first consumer",
    ),
    pytest.param(
        {
            "dsd": make_dsd(**MULTI_NODE),
            "workload": make_deployment_status(kind="LeaderWorkerSet", observed=None),
        },
        Phase.READY,
        status.REPLICAS_READY,
        id="a LeaderWorkerSet with every group ready is Ready",
    ),
    pytest.param(
        {
            "dsd": make_dsd(**MULTI_NODE),
            "workload": make_deployment_status(
                kind="LeaderWorkerSet",
                observed=None,
                conditions=[{"type": "UpdateInProgress", "status": "True"}],
            ),
        },
        Phase.BUILDING,
        status.ROLLING_OUT,
        id="a LeaderWorkerSet with an update in progress is Building",
    ),
]


@pytest.mark.parametrize(("inputs", "phase", "reason"), PHASES)
def test_phase_table(inputs: dict[str, Any], phase: Phase, reason: str) -> None:
    result = observe(**inputs)
    ready = condition(result, status.READY)
    assert (result.phase, ready.reason) == (phase, reason)
    assert ready.status == ("True" if phase == Phase.READY else "False")
    progressing = condition(result, status.PROGRESSING)
    assert (progressing.status == "True") == (phase in (Phase.PROVISIONING, Phase.BUILDING))


def test_counts_and_conditions_follow_the_workload() -> None:
    result = observe(workload=make_deployment_status(replicas=2, ready=1), generation=4)
    assert (result.replicas, result.ready_replicas, result.observed_generation) == (2, 1, 4)
    assert [c.type for c in result.conditions] == ["Ready", "Available", "Progressing"]
    assert {c.observed_generation for c in result.conditions} == {4}
    assert condition(result, status.AVAILABLE).status == "True"
    assert "1 of 2 replicas ready" in condition(result, status.READY).message


def test_scaled_to_zero_is_not_available() -> None:
    result = observe(dsd=make_dsd(replicas=0), workload=make_deployment_status(0, 0))
    available = condition(result, status.AVAILABLE)
    assert (available.status, available.reason) == ("False", status.SCALED_TO_ZERO)
    assert condition(result, status.READY).status == "True"


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        pytest.param(Problem("spec.replicas", "must be >= 0"), INVALID_SPEC, id="invalid"),
        pytest.param(
            Problem("spec.resources", "needs 80 GiB per GPU", reason=UNSCHEDULABLE),
            UNSCHEDULABLE,
            id="too big for the GPUs",
        ),
    ],
)
def test_a_refused_spec_is_failed_with_the_message(problem: Problem, reason: str) -> None:
    result = observe(dsd=None, error=InvalidSpecError([problem]), workload=None, generation=3)
    ready = condition(result, status.READY)
    assert (result.phase, ready.status, ready.reason) == (Phase.FAILED, "False", reason)
    assert ready.message == str(problem)
    assert condition(result, status.PROGRESSING).reason == reason
    assert result.observed_generation == ready.observed_generation == 3


def test_a_refused_spec_keeps_what_the_untouched_children_last_showed() -> None:
    served = observe(generation=1)
    live = json.loads(json.dumps(status.status_patch(None, served)))["status"]
    error = InvalidSpecError([Problem("spec.replicas", "must be >= 0")])
    result = observe(previous=live, dsd=None, error=error, workload=None, generation=2, now=T1)
    assert (result.replicas, result.ready_replicas) == (2, 2)
    assert (result.endpoint, result.selector) == (served.endpoint, served.selector)
    assert condition(result, status.AVAILABLE) == condition(served, status.AVAILABLE)
    assert condition(result, status.READY).last_transition_time == T1


def test_a_long_message_is_cut_to_the_crd_limit() -> None:
    error = InvalidSpecError([Problem("spec", "x" * 40_000)])
    result = observe(dsd=None, error=error, workload=None)
    assert len(condition(result, status.READY).message) == status.MAX_MESSAGE


def test_multi_node_without_leader_worker_set_says_how_to_install_it() -> None:
    result = observe(dsd=make_dsd(**MULTI_NODE), workload=None, lws_missing=True)
    ready = condition(result, status.READY)
    assert (result.phase, ready.status) == (Phase.PENDING, "False")
    assert ready.reason == status.LEADER_WORKER_SET_MISSING
    assert "kubectl apply --server-side" in ready.message
    assert "otherwise valid" in ready.message


def test_single_node_ignores_a_missing_leader_worker_set() -> None:
    assert observe(lws_missing=True).phase == Phase.READY


def test_observe_needs_a_spec_or_an_error() -> None:
    with pytest.raises(ValueError, match="dsd"):
        observe(dsd=None)


@pytest.mark.parametrize(
    ("spec", "url"),
    [
        pytest.param({}, "http://r1.ml.svc:8000/v1", id="plain HTTP on the default port"),
        pytest.param(
            {"tls": {"certSecretName": "r1-tls"}, "service": {"port": 8443}},
            "https://r1.ml.svc:8443/v1",
            id="https when TLS is set, on the service port",
        ),
    ],
)
def test_endpoint(spec: dict[str, Any], url: str) -> None:
    assert observe(dsd=make_dsd(**spec)).endpoint == url


@pytest.mark.parametrize(
    ("spec", "selector"),
    [
        pytest.param(
            {}, "app.kubernetes.io/instance=r1,app.kubernetes.io/name=r1-runtime", id="all pods"
        ),
        pytest.param(
            MULTI_NODE,
            "app.kubernetes.io/instance=r1,app.kubernetes.io/name=r1-runtime,"
            "leaderworkerset.sigs.k8s.io/worker-index=0",
            id="only group leaders when a replica spans nodes",
        ),
    ],
)
def test_selector_is_a_sorted_label_selector(spec: dict[str, Any], selector: str) -> None:
    assert status.selector(make_dsd(**spec)) == selector


def test_engine_cache_key_is_kept() -> None:
    assert observe(previous={"engineCacheKey": "abc123"}).engine_cache_key == "abc123"


# --- set_condition ----------------------------------------------------------------------


def make_condition(status_: str = "False", reason: str = "Waiting", **fields: Any) -> Condition:
    base = {"type": "Ready", "last_transition_time": T0, "observed_generation": 1}
    return Condition(**{**base, "status": status_, "reason": reason, **fields})


def test_set_condition_appends_a_new_type() -> None:
    conditions, changed = status.set_condition([], make_condition())
    assert (conditions, changed) == ([make_condition()], True)


def test_set_condition_with_equal_fields_changes_nothing() -> None:
    conditions, changed = status.set_condition(
        [make_condition()], make_condition(last_transition_time=T1)
    )
    assert not changed
    assert conditions == [make_condition()]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"reason": "Other"}, id="a new reason"),
        pytest.param({"message": "1 of 2 ready"}, id="a new message"),
        pytest.param({"observed_generation": 2}, id="a new generation"),
    ],
)
def test_set_condition_keeps_the_transition_time_when_status_stays(fields: dict[str, Any]) -> None:
    old = make_condition()
    conditions, changed = status.set_condition(
        [old], make_condition(last_transition_time=T1, **fields)
    )
    assert changed
    assert conditions[0].last_transition_time == T0


def test_set_condition_moves_the_transition_time_when_status_flips() -> None:
    other = make_condition(type="Available")
    old = [other, make_condition()]
    conditions, changed = status.set_condition(old, make_condition("True", last_transition_time=T1))
    assert changed
    assert [c.type for c in conditions] == ["Available", "Ready"]
    assert (conditions[1].status, conditions[1].last_transition_time) == ("True", T1)
    assert old[1].status == "False"


# --- status_patch -----------------------------------------------------------------------


def apply_patch(live: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """What the API server stores after a JSON merge patch of `.status` (via JSON)."""
    merged = {**live, **(patch or {}).get("status", {})}
    return json.loads(json.dumps({k: v for k, v in merged.items() if v is not None}))


def test_a_second_observe_of_the_same_world_patches_nothing() -> None:
    first = observe(workload=make_deployment_status(ready=1))
    live = apply_patch({}, status.status_patch(None, first))
    again = observe(previous=live, workload=make_deployment_status(ready=1), now=T1)
    assert status.status_patch(live, again) is None


def test_a_refused_spec_observed_twice_patches_nothing() -> None:
    error = InvalidSpecError([Problem("spec.replicas", "must be >= 0")])
    first = observe(dsd=None, error=error, workload=None)
    live = apply_patch({}, status.status_patch(None, first))
    again = observe(previous=live, dsd=None, error=error, workload=None, now=T1)
    assert status.status_patch(live, again) is None


def test_progress_patches_only_what_changed_and_keeps_transition_times() -> None:
    live = apply_patch(
        {}, status.status_patch(None, observe(workload=make_deployment_status(ready=0)))
    )
    later = observe(previous=live, workload=make_deployment_status(ready=1), now=T1)
    patch = status.status_patch(live, later)
    assert patch is not None
    assert sorted(patch["status"]) == ["conditions", "readyReplicas"]
    assert {c["lastTransitionTime"] for c in patch["status"]["conditions"]} == {T0, T1}
    ready = next(c for c in patch["status"]["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == T0  # still False: 1 of 2 is not ready


def test_patch_ignores_other_writers_keys_and_nulls_removed_fields() -> None:
    new = DeepSeekDeploymentStatus(phase=Phase.READY)
    old = {"phase": "Ready", "endpoint": "http://old/v1", "kopf": {"progress": {}}}
    assert status.status_patch(old, new) == {
        "status": {"endpoint": None, "readyReplicas": 0, "replicas": 0, "conditions": []}
    }


def test_a_first_status_is_written_in_full_by_alias() -> None:
    patch = status.status_patch(None, observe())
    assert patch is not None
    assert {"phase", "observedGeneration", "readyReplicas", "endpoint", "selector"} <= set(
        patch["status"]
    )


# --- phase_event ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "event"),
    [
        pytest.param("Ready", "Ready", None, id="no change is no event"),
        pytest.param(
            None,
            "Provisioning",
            ("Normal", "Provisioning", "phase Provisioning"),
            id="a first phase is Normal",
        ),
        pytest.param(
            "Building",
            "Ready",
            ("Normal", "Ready", "phase Building -> Ready"),
            id="becoming Ready is Normal",
        ),
        pytest.param(
            "Ready",
            "Degraded",
            ("Warning", "Degraded", "phase Ready -> Degraded"),
            id="Degraded is a Warning",
        ),
        pytest.param(
            "Pending",
            "Failed",
            ("Warning", "Failed", "phase Pending -> Failed"),
            id="Failed is a Warning",
        ),
    ],
)
def test_phase_event(old: str | None, new: str, event: tuple[str, str, str] | None) -> None:
    assert status.phase_event(old, new) == event


def test_phase_event_appends_the_detail() -> None:
    event = status.phase_event(Phase.READY, Phase.DEGRADED, "1 of 2 replicas ready")
    assert event == ("Warning", "Degraded", "phase Ready -> Degraded: 1 of 2 replicas ready")
