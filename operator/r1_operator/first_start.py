"""What pods and the pre-build Job say about a first start: weights fetched, engine built.

Pure: functions of live objects (core/v1 Pods, a batch/v1 Job), no I/O. status.py turns the
answers into the ModelCached and EngineBuilt conditions and the Provisioning/Building phases.

A pod's stage, from its container statuses (docs/runtime-flags.md for the containers):

    fetching  the `fetch` init container is running or waiting (a crash loop included)
    building  init done, the serving container is not ready (`/ready` answers 503 while the
              runtime loads or builds the engine)
    ready     the pod's Ready condition is True
    pending   anything else (not scheduled yet, no statuses, terminated)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from r1_operator import labels
from r1_operator.api import Phase
from r1_operator.render import common
from r1_operator.render.pod import BUILD_CONTAINER, FETCH_CONTAINER

Manifest = Mapping[str, Any]
Stage = Literal["fetching", "building", "ready", "pending"]
Check = tuple[Literal["True", "False", "Unknown"], str, str]
"""(status, reason, message) of one condition."""

# Condition types and reasons.
MODEL_CACHED = "ModelCached"
ENGINE_BUILT = "EngineBuilt"
FETCHING = "Fetching"
FETCHED = "Fetched"
BUILDING = "Building"
WAITING_FOR_MODEL = "WaitingForModel"
ENGINE_READY = "EngineReady"
PREBUILDING = "Prebuilding"
PREBUILT = "Prebuilt"
PREBUILD_FAILED = "PrebuildFailed"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""Set by the Job controller on its pods (Kubernetes 1.27+; `job-name` before)."""


@dataclass(frozen=True)
class PodStage:
    """A first-start stage (of one pod, or the most advanced among some pods) and a detail
    for messages: the waiting reason of a stuck container, else empty."""

    stage: Stage
    detail: str


def pod_stage(pod: Manifest) -> PodStage:
    """The stage of one pod, with the waiting reason of a stuck container as detail."""
    status = pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if conditions.get("Ready") == "True":
        return PodStage("ready", "")
    inits = {c.get("name"): c for c in status.get("initContainerStatuses") or []}
    fetch = inits.get(FETCH_CONTAINER)
    if fetch is not None and not _succeeded(fetch):
        state = fetch.get("state") or {}
        if "running" in state or "waiting" in state:
            return PodStage("fetching", _waiting_reason(fetch))
        return PodStage("pending", "")
    containers = [c for c in status.get("containerStatuses") or [] if c.get("name")]
    if containers and not all(c.get("ready") for c in containers):
        return PodStage("building", _waiting_reason(containers[0]))
    return PodStage("pending", "")


def serving_stage(pods: Sequence[Manifest]) -> PodStage | None:
    """The most advanced stage of the serving pods (ready > building > fetching); None when
    no serving pod has got as far as fetching."""
    return _most_advanced(pod for pod in pods if _component(pod) == common.SERVER)


@dataclass(frozen=True)
class Prebuild:
    """The pre-build Job's outcome. `state`: running, succeeded or failed."""

    state: Literal["running", "succeeded", "failed"]
    job_name: str
    engine_cache_key: str | None
    message: str
    stage: PodStage | None
    """Stage of the Job's pod while it runs."""


def read_prebuild(job: Manifest, pods: Sequence[Manifest]) -> Prebuild:
    """The live Job's state; the engine cache key from its succeeded pod's termination
    message (`{"engineCacheKey": ...}`), the failure from the Job's condition and the
    build container's last message."""
    name = str((job.get("metadata") or {}).get("name") or "")
    own = [pod for pod in pods if _job_of(pod) == name]
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if _true(conditions.get("Failed")):
        cause = str(conditions["Failed"].get("message") or conditions["Failed"].get("reason"))
        last = next((m for m in map(_build_message, own) if m), "")
        message = f"pre-build Job {name} failed: {cause}" + (f"; {last}" if last else "")
        return Prebuild("failed", name, None, message, None)
    if _true(conditions.get("Complete")) or int(status.get("succeeded") or 0) > 0:
        key = next((k for k in map(_cache_key, own) if k), None)
        return Prebuild("succeeded", name, key, f"pre-build Job {name} succeeded", None)
    stage = _most_advanced(own)
    return Prebuild("running", name, None, f"pre-build Job {name} is running", stage)


def prebuild_succeeded(job: Manifest | None) -> bool:
    """Whether a live pre-build Job succeeded (the workload may then roll out)."""
    return job is not None and read_prebuild(job, ()).state == "succeeded"


_ORDER: dict[Stage, int] = {"pending": 0, "fetching": 1, "building": 2, "ready": 3}


def _most_advanced(pods: Any) -> PodStage | None:
    stages = [pod_stage(pod) for pod in pods]
    best = max(stages, key=lambda s: _ORDER[s.stage], default=None)
    return best if best is not None and best.stage != "pending" else None


def _component(pod: Manifest) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(labels.COMPONENT)


def _job_of(pod: Manifest) -> str | None:
    pod_labels = (pod.get("metadata") or {}).get("labels") or {}
    return pod_labels.get(JOB_NAME_LABEL) or pod_labels.get("job-name")


def _true(condition: Manifest | None) -> bool:
    return bool(condition and condition.get("status") == "True")


def _succeeded(container: Manifest) -> bool:
    terminated = (container.get("state") or {}).get("terminated") or {}
    return "exitCode" in terminated and terminated["exitCode"] == 0


def _waiting_reason(container: Manifest) -> str:
    waiting = (container.get("state") or {}).get("waiting") or {}
    reason, message = waiting.get("reason"), waiting.get("message")
    return f"{reason}: {message}" if reason and message else str(reason or "")


def _terminated(pod: Manifest) -> Manifest:
    containers = (pod.get("status") or {}).get("containerStatuses") or []
    build: Manifest = next((c for c in containers if c.get("name") == BUILD_CONTAINER), {})
    state = build.get("state") or {}
    last = build.get("lastState") or {}
    return state.get("terminated") or last.get("terminated") or {}


def _build_message(pod: Manifest) -> str:
    return str(_terminated(pod).get("message") or "").strip()


def _cache_key(pod: Manifest) -> str | None:
    """engineCacheKey of a build container that exited 0 (docs/runtime-flags.md)."""
    terminated = _terminated(pod)
    if terminated.get("exitCode") != 0:
        return None
    try:
        result = json.loads(str(terminated.get("message") or ""))
    except ValueError:
        return None
    key = result.get("engineCacheKey") if isinstance(result, dict) else None
    return key if isinstance(key, str) and key else None


def conditions(serving: PodStage | None, prebuild: Prebuild | None) -> dict[str, Check]:
    """ModelCached and EngineBuilt, from the pre-build Job when there is one, else from the
    serving pods; none (the previous ones stay) when nothing has started yet."""
    if prebuild is not None and prebuild.state == "failed":
        return {ENGINE_BUILT: ("False", PREBUILD_FAILED, prebuild.message)}
    if prebuild is not None and prebuild.state == "succeeded":
        key = prebuild.engine_cache_key or "unknown (the Job's result was unreadable)"
        return {
            MODEL_CACHED: ("True", FETCHED, "the pre-build Job found the weights on the hot tier"),
            ENGINE_BUILT: ("True", PREBUILT, f"{prebuild.message}; engine cache key {key}"),
        }
    stage = prebuild.stage if prebuild is not None else serving
    if stage is None:
        return {}
    detail = f" ({stage.detail})" if stage.detail else ""
    if stage.stage == "fetching":
        return {
            MODEL_CACHED: ("False", FETCHING, f"downloading the weights to the hot tier{detail}"),
            ENGINE_BUILT: ("Unknown", WAITING_FOR_MODEL, "the engine is looked up once fetched"),
        }
    cached: Check = ("True", FETCHED, "the weights are on the hot tier")
    if stage.stage == "building":
        message = f"the runtime loads the weights and loads or builds the engine{detail}"
        return {MODEL_CACHED: cached, ENGINE_BUILT: ("False", BUILDING, message)}
    return {MODEL_CACHED: cached, ENGINE_BUILT: ("True", ENGINE_READY, "a replica serves")}


def refine(
    assessed: tuple[Phase, str, str],
    starting: bool,
    serving: PodStage | None,
    prebuild: Prebuild | None,
) -> tuple[Phase, str, str]:
    """The phase and Ready reason/message of status.assess, made precise by what the pods
    and the pre-build Job show: a failed pre-build fails the deployment; a running one holds
    the rollout (Provisioning while it fetches, else Building); replicas still `starting`
    (none ready, none outdated) are Provisioning while they fetch and Building while they
    build."""
    message = assessed[2]
    if prebuild is not None and prebuild.state == "failed":
        return Phase.FAILED, PREBUILD_FAILED, prebuild.message
    if prebuild is not None and prebuild.state == "running":
        held = f"{prebuild.message}; the workload rolls out when it succeeds"
        fetching = prebuild.stage is not None and prebuild.stage.stage == "fetching"
        return (Phase.PROVISIONING if fetching else Phase.BUILDING), PREBUILDING, held
    if not starting or serving is None:
        return assessed
    counts = message.split(";")[0]
    if serving.stage == "fetching":
        return Phase.PROVISIONING, FETCHING, f"{counts}; pods fetch the weights"
    if serving.stage == "building":
        return Phase.BUILDING, BUILDING, f"{counts}; pods load the weights and build the engine"
    return assessed
