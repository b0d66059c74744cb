"""Thin kopf handlers: every trigger runs the one level-based reconcile.

Triggers: create, update and resume of a DeepSeekDeployment; a slow timer for drift
(R1_OPERATOR_DRIFT_INTERVAL seconds); any change of an owned workload (Deployment,
LeaderWorkerSet) or pre-build Job, so readiness reaches the parent's status at once and a
deleted workload comes back without waiting for the timer; and a pod of a deployment moving
to another first-start stage (fetching, building, ready).
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from r1_operator import labels, metrics
from r1_operator.api import GROUP, PLURAL, VERSION
from r1_operator.first_start import pod_stage
from r1_operator.kube import DEEPSEEK, Kube
from r1_operator.reconcile import LeaderWorkerSetMissingError, Reconciled, reconcile
from r1_operator.status import phase_event
from r1_operator.validation import InvalidSpecError

DRIFT_INTERVAL = float(os.environ.get("R1_OPERATOR_DRIFT_INTERVAL", "300"))
RETRYABLE_STATUSES = {409, 429, 500, 502, 503, 504}
RETRY_DELAY = 5.0
LWS_RETRY_DELAY = 300.0
"""Installing a CRD is a human step: look again every few minutes, not in a hot loop."""

OWNED_LABELS = {labels.MANAGED_BY: labels.FIELD_MANAGER}
DEPLOYMENTS = ("apps", "v1", "deployments")
LEADER_WORKER_SETS = ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")
JOBS = ("batch", "v1", "jobs")
PODS = ("", "v1", "pods")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Every kopf setting the operator relies on, each with its reason."""
    # Status is a structural schema, so kopf's own records go to annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Restart watches every few minutes so a silently dropped stream cannot go unnoticed.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    # A stuck API request must fail and be retried rather than block a handler for 5 minutes.
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # Children are watched through a server-side label selector: kopf's `labels=` filter
    # alone streams every pod, Deployment and Job of the cluster and filters in memory.
    for resource in (DEPLOYMENTS, LEADER_WORKER_SETS, JOBS, PODS):
        settings.watching.label_selectors[resource] = f"{labels.MANAGED_BY}={labels.FIELD_MANAGER}"
    # Events for warnings and errors only: Normal events come from reconcile itself.
    settings.posting.level = logging.WARNING
    # Reconciles are blocking API calls in threads; one busy deployment must not starve others.
    settings.execution.max_workers = 16
    # A deletion keeps the finalizer until the drift timer has exited, and kopf looks again
    # only this often (default 60 s): a delete during a timer reconcile hung a minute. A sync
    # timer cannot be cancelled, only waited for (tests/operator/test_delete_during_drift.py).
    settings.background.cancellation_polling = 2
    memo.kube = Kube.from_environment()
    memo.tracker = ReconcileTracker()
    metrics.serve(int(os.environ.get("R1_OPERATOR_METRICS_PORT", "8080")))


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def on_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconcile_latest(memo, body.metadata.namespace or "default", body.metadata.name or "")


@kopf.timer(GROUP, VERSION, PLURAL, interval=DRIFT_INTERVAL, initial_delay=DRIFT_INTERVAL)
def on_drift_timer(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """kopf keeps a finalizer on each object while its timer runs (to stop it cleanly)."""
    reconcile_latest(memo, body.metadata.namespace or "default", body.metadata.name or "")


@kopf.on.event(*DEPLOYMENTS, labels=OWNED_LABELS)
@kopf.on.event(*LEADER_WORKER_SETS, labels=OWNED_LABELS)
@kopf.on.event(*JOBS, labels=OWNED_LABELS)
def on_workload_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A workload version a reconcile already saw (the answer to its own apply) tells
    nothing new; any other version, or a deletion, reconciles the parent."""
    owner = body.metadata.labels.get(labels.DEPLOYMENT)
    version = None if type == "DELETED" else body.metadata.get("resourceVersion")
    if owner:
        reconcile_latest(memo, body.metadata.namespace or "default", owner, unless_seen=version)


@kopf.on.event(*PODS, labels=OWNED_LABELS)
def on_pod_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A pod that moved to another first-start stage (fetching, building, ready: see
    first_start.py) reconciles its deployment, so ModelCached/EngineBuilt and the phase
    follow within seconds rather than at the next drift timer.

    NOTE: pods change status often (probes, restarts); a reconcile is ~10 reads, so only a
    change of stage triggers one. The watch is label-selected on the server (configure)."""
    owner = body.metadata.labels.get(labels.DEPLOYMENT)
    namespace, uid = body.metadata.namespace or "default", body.metadata.uid or ""
    stage = "deleted" if type == "DELETED" else pod_stage(body).stage
    if owner and memo.tracker.pod_moved(uid, stage):
        reconcile_latest(memo, namespace, owner)


def reconcile_latest(
    memo: kopf.Memo, namespace: str, name: str, unless_seen: str | None = None
) -> Reconciled | None:
    """Reconcile the deployment as it is now, one reconcile per deployment at a time;
    nothing when `unless_seen` is the workload version the last reconcile saw.

    NOTE: kopf runs each trigger (create/update, timer, workload event) in its own worker,
    and their bodies may be older than a status another trigger just wrote: a reconcile
    from such a body would write the same status again and repeat its Event. So reconciles
    of one deployment queue on a lock and each reads the object afresh inside it. The
    event of a reconcile's own apply usually arrives while that reconcile still runs, so
    the seen version is compared inside the lock too."""
    with memo.tracker.lock(namespace, name):
        if unless_seen is not None and unless_seen == memo.tracker.seen_workload(namespace, name):
            return None
        try:
            body = memo.kube.get(DEEPSEEK, namespace, name)
        except ApiException as error:
            raise _retryable(error) from None
        if not body:
            memo.tracker.forget(namespace, name)
            return None
        result = run_reconcile(memo.kube, body)
        if result is not None:
            memo.tracker.saw_workload(namespace, name, result.workload_version)
        return result


def run_reconcile(kube: Kube, body: dict[str, Any]) -> Reconciled | None:
    """Reconcile and translate the outcome into kopf's retry rules, events and metrics."""
    started = time.monotonic()
    try:
        result = reconcile(kube, body, now())
    except InvalidSpecError as error:
        metrics.record("invalid", started)
        _post_phase_change(body, "Failed", error.reason, str(error))
        raise kopf.PermanentError(f"{error.reason}: {error}") from None
    except LeaderWorkerSetMissingError as error:
        metrics.record("waiting", started)
        raise kopf.TemporaryError(str(error), delay=LWS_RETRY_DELAY) from None
    except ApiException as error:
        metrics.record("error", started)
        raise _retryable(error) from None
    metrics.record("ok", started)
    if result is not None:
        ready = next((c for c in result.status.conditions if c.type == "Ready"), None)
        event = phase_event(
            result.previous_phase, result.status.phase, ready.message if ready else ""
        )
        if event:
            kopf.event(
                kopf.Body(cast(kopf.RawBody, body)),
                type=event[0],
                reason=event[1],
                message=event[2],
            )
    return result


def _retryable(error: ApiException) -> Exception:
    """kopf's TemporaryError for a status worth retrying, else the error as it is."""
    if error.status in RETRYABLE_STATUSES:
        return kopf.TemporaryError(f"API {error.status}: {error.reason}", delay=RETRY_DELAY)
    return error


def _post_phase_change(body: dict[str, Any], phase: str, reason: str, message: str) -> None:
    """A Warning Event for a refused spec, once per change of phase or message."""
    old = body.get("status") or {}
    old_message = next(
        (c.get("message") for c in old.get("conditions", []) if c.get("type") == "Ready"), None
    )
    if old.get("phase") != phase or old_message != message:
        kopf.warn(kopf.Body(cast(kopf.RawBody, body)), reason=reason, message=message)


class ReconcileTracker:
    """What the handlers keep between reconciles (`memo.tracker`): one lock per deployment,
    the workload version its last reconcile saw, and the first-start stage each pod was
    last seen in."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._workloads: dict[tuple[str, str], str | None] = {}
        self._pods: dict[str, str] = {}

    def lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def saw_workload(self, namespace: str, name: str, version: str | None) -> None:
        with self._guard:
            self._workloads[(namespace, name)] = version

    def pod_moved(self, uid: str, stage: str) -> bool:
        """Record a pod's stage; whether it differs from the last one recorded."""
        with self._guard:
            moved = self._pods.get(uid) != stage
            if stage == "deleted":
                self._pods.pop(uid, None)
            else:
                self._pods[uid] = stage
            return moved

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept for a deployment that is gone (its lock stays valid for holders)."""
        with self._guard:
            self._locks.pop((namespace, name), None)
            self._workloads.pop((namespace, name), None)

    def seen_workload(self, namespace: str, name: str) -> str | None:
        with self._guard:
            return self._workloads.get((namespace, name))


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
