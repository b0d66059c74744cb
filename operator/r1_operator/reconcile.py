"""Level-based reconcile: get, validate, render, apply, prune, status.

One function for create, update, resume, drift timer and child events. Running it twice
changes nothing, and a run over an unchanged object makes no write call: a child is
applied only when the live object lacks something rendered, and status is patched only
when it changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from r1_operator import first_start, labels, render, status
from r1_operator.api import DeepSeekDeployment, DeepSeekDeploymentStatus
from r1_operator.kube import CHILD_KINDS, DEEPSEEK, Kube, Manifest
from r1_operator.validation import InvalidSpecError, validate

ChildKey = tuple[str, str]
"""(kind, name) of a child; names are unique per kind within one deployment."""

LEADER_WORKER_SET = CHILD_KINDS["LeaderWorkerSet"]
WORKLOAD_KINDS = ("Deployment", "LeaderWorkerSet")


class LeaderWorkerSetMissingError(RuntimeError):
    """A multi-node spec on a cluster without the LeaderWorkerSet API."""


@dataclass(frozen=True)
class Reconciled:
    """What one reconcile did, for events, metrics and tests."""

    status: DeepSeekDeploymentStatus
    previous_phase: str | None
    applied: tuple[ChildKey, ...]
    pruned: tuple[ChildKey, ...]
    status_written: bool
    workload_version: str | None = None
    """resourceVersion of the live workload the status was computed from."""


def reconcile(kube: Kube, body: Manifest, now: str) -> Reconciled | None:
    """Bring the children of one DeepSeekDeployment to the rendered state.

    Returns None when the object is gone or being deleted. Raises InvalidSpecError or
    LeaderWorkerSetMissingError after recording them in status (children untouched), and
    the client's ApiException for API failures (the caller retries)."""
    metadata = body["metadata"]
    if metadata.get("deletionTimestamp"):
        return None
    try:
        dsd = validate(body)
    except InvalidSpecError as error:
        _write_status(kube, body, now, error=error)
        raise
    if dsd.spec.is_multi_node and not kube.has_api(LEADER_WORKER_SET):
        _write_status(kube, body, now, dsd=dsd, lws_missing=True)
        raise LeaderWorkerSetMissingError(
            "parallelism.nodes > 1 needs the LeaderWorkerSet API (leaderworkerset.x-k8s.io)"
        )
    desired = [_owned(manifest, body) for manifest in render.render(dsd)]
    live = _live_children(kube, dsd, metadata["uid"])
    held = _held_workload(desired, live)
    applied = {
        _key(m): kube.apply(m)
        for m in desired
        if _key(m) != held and not is_subset(m, live.get(_key(m)))
    }
    pruned = _prune(kube, dsd, live, {_key(m) for m in desired})
    children = {key: obj for key, obj in {**live, **applied}.items() if key not in pruned}
    pods = kube.list_pods(dsd.namespace, dsd.name)
    return _write_status(
        kube, body, now, dsd=dsd, children=children, pods=pods, applied=applied, pruned=pruned
    )


def _held_workload(desired: list[Manifest], live: dict[ChildKey, Manifest]) -> ChildKey | None:
    """The workload's key while the pre-build Job of the rendered spec has not succeeded:
    it is neither applied nor pruned then (a running older workload keeps serving)."""
    job = next((_key(m) for m in desired if m["kind"] == "Job"), None)
    if job is None or first_start.prebuild_succeeded(live.get(job)):
        return None
    return next((_key(m) for m in desired if m["kind"] in WORKLOAD_KINDS), None)


def _write_status(
    kube: Kube,
    body: Manifest,
    now: str,
    *,
    dsd: DeepSeekDeployment | None = None,
    error: InvalidSpecError | None = None,
    lws_missing: bool = False,
    children: dict[ChildKey, Manifest] | None = None,
    pods: list[Manifest] | None = None,
    applied: dict[ChildKey, Manifest] | None = None,
    pruned: Iterable[ChildKey] = (),
) -> Reconciled:
    metadata, old = body["metadata"], body.get("status") or {}
    children = children or {}
    workload = _workload(children)
    new = status.observe(
        previous=old,
        generation=int(metadata.get("generation") or 0),
        dsd=dsd,
        error=error,
        workload=workload,
        pvcs=[obj for (kind, _), obj in children.items() if kind == "PersistentVolumeClaim"],
        pods=pods or [],
        prebuild_job=next((obj for (kind, _), obj in children.items() if kind == "Job"), None),
        lws_missing=lws_missing,
        now=now,
    )
    patch = status.status_patch(old, new)
    if patch:
        kube.patch_status(metadata["namespace"], metadata["name"], patch)
    return Reconciled(
        status=new,
        previous_phase=old.get("phase"),
        applied=tuple(applied or ()),
        pruned=tuple(pruned),
        status_written=patch is not None,
        workload_version=(workload or {}).get("metadata", {}).get("resourceVersion"),
    )


def _workload(children: dict[ChildKey, Manifest]) -> Manifest | None:
    for (kind, _), obj in children.items():
        if kind in WORKLOAD_KINDS:
            return obj
    return None


def _owned(manifest: Manifest, body: Manifest) -> Manifest:
    """`manifest` with an owner reference to the DeepSeekDeployment, except retained PVCs:
    an owner reference would let the garbage collector delete the user's weights."""
    if labels.is_retained(manifest):
        return manifest
    owner = {
        "apiVersion": DEEPSEEK.api_version,
        "kind": DEEPSEEK.kind,
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {**manifest, "metadata": {**manifest["metadata"], "ownerReferences": [owner]}}


def _live_children(kube: Kube, dsd: DeepSeekDeployment, uid: str) -> dict[ChildKey, Manifest]:
    """Live objects of every child kind that carry this deployment's label and are ours:
    owned by this uid, or retained PVCs (which carry no owner reference by design)."""
    found: dict[ChildKey, Manifest] = {}
    for kind in CHILD_KINDS.values():
        if kind is LEADER_WORKER_SET and not dsd.spec.is_multi_node:
            continue
        for obj in kube.list_children(kind, dsd.namespace, dsd.name):
            if _is_ours(obj, uid):
                found[(kind.kind, obj["metadata"]["name"])] = {**obj, "kind": kind.kind}
    return found


def _is_ours(obj: Manifest, uid: str) -> bool:
    owners = obj["metadata"].get("ownerReferences") or []
    return labels.is_retained(obj) or any(owner.get("uid") == uid for owner in owners)


def _prune(
    kube: Kube, dsd: DeepSeekDeployment, live: dict[ChildKey, Manifest], desired: set[ChildKey]
) -> set[ChildKey]:
    """Delete owned children no longer rendered; never a retained PVC."""
    pruned = set()
    for key, obj in live.items():
        if key in desired or labels.is_retained(obj):
            continue
        kube.delete(CHILD_KINDS[key[0]], dsd.namespace, key[1])
        pruned.add(key)
    return pruned


def _key(manifest: Manifest) -> ChildKey:
    return manifest["kind"], manifest["metadata"]["name"]


def is_subset(desired: Any, live: Any) -> bool:
    """Whether `live` already holds everything in `desired` (so an apply would change
    nothing). Fields the API server or other controllers add to `live` are ignored."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and is_subset(value, live[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(is_subset(d, lv) for d, lv in zip(desired, live, strict=True))
        )
    return bool(desired == live)
