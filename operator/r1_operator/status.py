"""Status of a DeepSeekDeployment, computed from what one reconcile saw.

Pure: no I/O, no clock (the caller passes `now`, RFC 3339). `observe` gives the next status,
`status_patch` the merge patch that writes it (None when nothing changed, so a no-op
reconcile makes no write call), `phase_event` the Event for a change of phase.

Phase rules, first match wins. N is spec.replicas; ready counts the workload's replicas
(pods of a Deployment, groups of a LeaderWorkerSet); the rollout is *settled* when the
workload's controller has seen its latest spec, N replicas are updated and no old one is left.

    phase         when                                      Ready condition
    Failed        the spec is invalid or does not fit       False InvalidSpec | Unschedulable
    Pending       nodes > 1 and no LeaderWorkerSet API      False LeaderWorkerSetMissing
    Provisioning  the workload does not exist yet           False WorkloadPending
    Ready         N == 0                                    True  ScaledToZero
    Provisioning  none ready and a claim is not Bound       False ClaimsPending
    Ready         ready >= N and settled                    True  ReplicasReady
    Degraded      the rollout passed its deadline           False ProgressDeadlineExceeded
    Degraded      settled, ready < N, and the last status   False ReplicasLost
                  was Ready with more ready, or Degraded
    Building      replicas of an older spec still run       False RollingOut
    Building      otherwise: pods fetch weights and build   False ReplicasStarting
                  or load the engine

first_start.refine then looks at the pods and the pre-build Job (engine.prebuild):

    Failed        the pre-build Job failed                  False PrebuildFailed
    Provisioning  the pre-build Job's pod fetches weights   False Prebuilding
    Building      the pre-build Job runs otherwise          False Prebuilding
                  (the workload waits for it)
    Provisioning  ReplicasStarting and a pod fetches        False Fetching
    Building      ReplicasStarting and a pod builds         False Building

ModelCached and EngineBuilt come from first_start.conditions: the pre-build Job's result
when there is one (EngineBuilt True Prebuilt, and status.engineCacheKey from the Job's pod),
else the most advanced serving pod (fetching: ModelCached False Fetching; building:
ModelCached True, EngineBuilt False Building; ready: EngineBuilt True EngineReady). Without
pods they keep their last values.

Available is True (ReplicasAvailable) while a replica is ready, else False (ScaledToZero,
NoReplicasReady). Progressing is True with Ready's reason while Provisioning or Building,
else False (RolloutComplete, ProgressDeadlineExceeded, or the refusal's reason).
A refused spec (Failed, Pending) leaves the children untouched, so Available, replicas,
readyReplicas, selector and endpoint keep their last values. engineCacheKey is kept until a
pre-build reports a new one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from r1_operator import first_start
from r1_operator.api import Condition, DeepSeekDeployment, DeepSeekDeploymentStatus, Phase
from r1_operator.render import serving_selector
from r1_operator.validation import InvalidSpecError

# Condition types.
READY = "Ready"
AVAILABLE = "Available"
PROGRESSING = "Progressing"

# Condition reasons; InvalidSpec and Unschedulable come from problems.py.
LEADER_WORKER_SET_MISSING = "LeaderWorkerSetMissing"
WORKLOAD_PENDING = "WorkloadPending"
CLAIMS_PENDING = "ClaimsPending"
SCALED_TO_ZERO = "ScaledToZero"
REPLICAS_READY = "ReplicasReady"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
REPLICAS_LOST = "ReplicasLost"
ROLLING_OUT = "RollingOut"
REPLICAS_STARTING = "ReplicasStarting"
REPLICAS_AVAILABLE = "ReplicasAvailable"
NO_REPLICAS_READY = "NoReplicasReady"
ROLLOUT_COMPLETE = "RolloutComplete"

LWS_MISSING_MESSAGE = (
    "parallelism.nodes > 1 runs each replica as a LeaderWorkerSet group, but this cluster has "
    "no LeaderWorkerSet API (leaderworkerset.x-k8s.io/v1). Install it: `kubectl apply "
    "--server-side -f https://github.com/kubernetes-sigs/lws/releases/download/<version>/"
    "manifests.yaml` (https://lws.sigs.k8s.io/docs/installation/), or set parallelism.nodes "
    "to 1. The spec is otherwise valid; the operator retries."
)
REFUSED_PROGRESS = "children are left as they are until the Ready condition's cause is fixed"
MAX_MESSAGE = 32768
"""Condition.message's maxLength in the CRD; longer messages are cut."""

Manifest = Mapping[str, Any]
ConditionStatus = Literal["True", "False", "Unknown"]
Check = tuple[ConditionStatus, str, str]
"""(status, reason, message) of one condition."""


@dataclass(frozen=True)
class Rollout:
    """What a Deployment or LeaderWorkerSet reports, against `desired` replicas."""

    replicas: int
    ready: int
    updated: int
    settled: bool
    outdated: bool  # some replicas may run an older spec
    stalled: str | None  # the message of a ProgressDeadlineExceeded condition


def read_rollout(workload: Manifest, desired: int) -> Rollout:
    """The rollout state of a live apps/v1 Deployment or LeaderWorkerSet."""
    status = workload.get("status") or {}
    generation = (workload.get("metadata") or {}).get("generation") or 0
    observed = status.get("observedGeneration")
    if observed is None and workload.get("kind") == "LeaderWorkerSet":
        # NOTE: optional (omitempty) in the LeaderWorkerSet API: absence is not lag.
        observed = generation
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    updating = conditions.get("UpdateInProgress", {}).get("status") == "True"
    progress = conditions.get("Progressing", {})
    replicas, updated = int(status.get("replicas") or 0), int(status.get("updatedReplicas") or 0)
    current = (observed or 0) >= generation and not updating
    stalled = current and progress.get("reason") == PROGRESS_DEADLINE_EXCEEDED
    return Rollout(
        replicas=replicas,
        ready=int(status.get("readyReplicas") or 0),
        updated=updated,
        settled=current and updated >= desired and replicas <= updated,
        outdated=replicas > updated or (replicas > 0 and not current),
        stalled=str(progress.get("message") or PROGRESS_DEADLINE_EXCEEDED) if stalled else None,
    )


def set_condition(conditions: Sequence[Condition], new: Condition) -> tuple[list[Condition], bool]:
    """A new list with `new` in place of the condition of its type (appended when absent),
    and whether anything changed (status, reason, message or observedGeneration).
    The old lastTransitionTime stays when the status did not change."""
    old = next((c for c in conditions if c.type == new.type), None)
    if old is None:
        return [*conditions, new], True
    if old.status == new.status:
        new = new.model_copy(update={"last_transition_time": old.last_transition_time})
    return [new if c.type == new.type else c for c in conditions], new != old


def parse_status(raw: Manifest | None) -> DeepSeekDeploymentStatus:
    """The fields of a live `.status` this module owns (other keys are ignored); an empty
    status when they do not parse."""
    owned = {key: value for key, value in (raw or {}).items() if key in _STATUS_KEYS}
    try:
        return DeepSeekDeploymentStatus.model_validate(owned)
    except ValidationError:
        return DeepSeekDeploymentStatus()


_STATUS_KEYS = {f.alias or n for n, f in DeepSeekDeploymentStatus.model_fields.items()}


def observe(
    *,
    previous: Manifest | None,
    generation: int,
    dsd: DeepSeekDeployment | None,
    error: InvalidSpecError | None = None,
    workload: Manifest | None = None,
    pvcs: Sequence[Manifest] = (),
    pods: Sequence[Manifest] = (),
    prebuild_job: Manifest | None = None,
    lws_missing: bool = False,
    now: str,
) -> DeepSeekDeploymentStatus:
    """The next status by the module's rules; equal inputs give an equal status.

    `previous`: the live `.status` or None. `dsd`: the validated object, or None with the
    validation `error`. `workload`: the live Deployment or LeaderWorkerSet, None before it
    exists. `pvcs`: the live claims the operator created. `pods`: the live pods labelled as
    the deployment's (serving and pre-build). `prebuild_job`: the live pre-build Job of the
    current spec, None without engine.prebuild. `lws_missing`: the cluster lacks the
    LeaderWorkerSet API. Conditions carry `generation` as their observedGeneration."""
    prev = parse_status(previous)
    if error is not None:
        return _refused(prev, Phase.FAILED, (error.reason, str(error)), generation, now)
    if dsd is None:
        raise ValueError("observe needs the validated `dsd` or the validation `error`")
    if lws_missing and dsd.spec.is_multi_node:
        why = (LEADER_WORKER_SET_MISSING, LWS_MISSING_MESSAGE)
        return _refused(prev, Phase.PENDING, why, generation, now)
    desired = dsd.spec.replicas
    rollout = read_rollout(workload, desired) if workload is not None else None
    assessed = assess(desired, rollout, pvcs, prev)
    serving = first_start.serving_stage(pods)
    prebuild = first_start.read_prebuild(prebuild_job, pods) if prebuild_job else None
    starting = assessed[1] == REPLICAS_STARTING
    phase, reason, message = first_start.refine(assessed, starting, serving, prebuild)
    checks: dict[str, Check] = {
        READY: ("True" if phase == Phase.READY else "False", reason, message),
        AVAILABLE: _available(desired, rollout),
        PROGRESSING: _progressing(phase, reason, message),
        **first_start.conditions(serving, prebuild),
    }
    key = prebuild.engine_cache_key if prebuild else None
    return DeepSeekDeploymentStatus(
        phase=phase,
        conditions=_with_checks(prev.conditions, checks, generation, now),
        observed_generation=generation,
        replicas=rollout.replicas if rollout else 0,
        ready_replicas=rollout.ready if rollout else 0,
        selector=selector(dsd),
        endpoint=endpoint(dsd),
        engine_cache_key=key or prev.engine_cache_key,
    )


def assess(
    desired: int,
    rollout: Rollout | None,
    pvcs: Sequence[Manifest],
    previous: DeepSeekDeploymentStatus,
) -> tuple[Phase, str, str]:
    """Phase, and the Ready condition's reason and message, for a valid spec."""
    if rollout is None:
        return Phase.PROVISIONING, WORKLOAD_PENDING, "the workload is being created"
    if desired == 0:
        return Phase.READY, SCALED_TO_ZERO, "spec.replicas is 0: no pods run"
    unbound = sorted(p["metadata"]["name"] for p in pvcs if not _is_bound(p))
    if unbound and rollout.ready == 0:
        message = f"claims not bound yet: {', '.join(unbound)} (a WaitForFirstConsumer"
        return Phase.PROVISIONING, CLAIMS_PENDING, f"{message} class binds at first schedule)"
    counts = f"{rollout.ready} of {desired} replicas ready"
    if rollout.settled and rollout.ready >= desired:
        return Phase.READY, REPLICAS_READY, counts
    if rollout.stalled:
        return Phase.DEGRADED, PROGRESS_DEADLINE_EXCEEDED, f"{counts}; {rollout.stalled}"
    lost = previous.phase == Phase.READY and rollout.ready < previous.ready_replicas
    if rollout.settled and (lost or previous.phase == Phase.DEGRADED):
        return Phase.DEGRADED, REPLICAS_LOST, f"{counts}; see the pods' events and logs"
    if rollout.outdated:
        message = f"{counts}; {rollout.updated} of {desired} updated to the latest spec"
        return Phase.BUILDING, ROLLING_OUT, message
    message = f"{counts}; pods are starting: they fetch the weights, then build or load the engine"
    return Phase.BUILDING, REPLICAS_STARTING, message


def selector(dsd: DeepSeekDeployment) -> str:
    """Label selector of the serving pods, `k=v,k=v` sorted, for the scale subresource."""
    return ",".join(f"{key}={value}" for key, value in sorted(serving_selector(dsd).items()))


def endpoint(dsd: DeepSeekDeployment) -> str:
    """In-cluster URL of the OpenAI API: Service `<name>` (render/service.py) on
    service.port; https when spec.tls is set."""
    scheme = "https" if dsd.spec.tls else "http"
    return f"{scheme}://{dsd.name}.{dsd.namespace}.svc:{dsd.spec.service.port}/v1"


def status_patch(old: Manifest | None, new: DeepSeekDeploymentStatus) -> dict[str, Any] | None:
    """JSON merge patch `{"status": {...}}` of the top-level fields that differ from the live
    status `old` (a removed field is null); None when nothing differs."""
    before = parse_status(old).model_dump(
        mode="json", by_alias=True, exclude_unset=True, exclude_none=True
    )
    after = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    keys = sorted(before.keys() | after.keys())
    changed = {key: after.get(key) for key in keys if before.get(key) != after.get(key)}
    return {"status": changed} if changed else None


def phase_event(
    old_phase: str | None, new_phase: str, detail: str = ""
) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event for a change of phase; None when unchanged.
    Warning for Failed and Degraded, else Normal; the reason is the new phase; `detail`
    (say, the Ready condition's message) ends the message."""
    if old_phase == new_phase:
        return None
    kind = "Warning" if new_phase in (Phase.FAILED, Phase.DEGRADED) else "Normal"
    message = f"phase {old_phase} -> {new_phase}" if old_phase else f"phase {new_phase}"
    return kind, str(new_phase), f"{message}: {detail}" if detail else message


def _refused(
    prev: DeepSeekDeploymentStatus, phase: Phase, why: tuple[str, str], generation: int, now: str
) -> DeepSeekDeploymentStatus:
    reason, message = why
    checks: dict[str, Check] = {
        READY: ("False", reason, message),
        PROGRESSING: ("False", reason, REFUSED_PROGRESS),
    }
    if not any(c.type == AVAILABLE for c in prev.conditions):
        checks[AVAILABLE] = ("False", reason, "no replicas run for this spec")
    conditions = _with_checks(prev.conditions, checks, generation, now)
    update = {"phase": phase, "conditions": conditions, "observed_generation": generation}
    return prev.model_copy(update=update)


def _available(desired: int, rollout: Rollout | None) -> Check:
    ready = rollout.ready if rollout else 0
    if desired == 0:
        return "False", SCALED_TO_ZERO, "spec.replicas is 0"
    if ready:
        return "True", REPLICAS_AVAILABLE, f"{ready} of {desired} replicas ready"
    return "False", NO_REPLICAS_READY, "no replica is ready to serve yet"


def _progressing(phase: Phase, reason: str, message: str) -> Check:
    if phase in (Phase.PROVISIONING, Phase.BUILDING):
        return "True", reason, message
    if reason == PROGRESS_DEADLINE_EXCEEDED or phase == Phase.FAILED:
        return "False", reason, message
    return "False", ROLLOUT_COMPLETE, "the workload runs the latest spec"


def _with_checks(
    conditions: Sequence[Condition], checks: Mapping[str, Check], generation: int, now: str
) -> list[Condition]:
    result = list(conditions)
    for kind, (status, reason, message) in checks.items():
        new = Condition(
            type=kind,
            status=status,
            reason=reason,
            message=message[:MAX_MESSAGE],
            last_transition_time=now,
            observed_generation=generation,
        )
        result, _ = set_condition(result, new)
    return result


def _is_bound(pvc: Manifest) -> bool:
    return bool((pvc.get("status") or {}).get("phase") == "Bound")
