"""Label and annotation keys on every child: one place, so selectors never disagree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"
VERSION = "app.kubernetes.io/version"

DEPLOYMENT = "r1-operator.dev/deployment"
"""Name of the owning DeepSeekDeployment; the operator lists children by it."""
TIER = "r1-operator.dev/storage-tier"
RETAIN = "r1-operator.dev/retain"
"""On PVCs: "true" when the operator must never delete the claim."""
CONFIG_HASH = "r1-operator.dev/config-hash"
"""Pod template annotation: digest of the runtime settings, so a change rolls the pods."""

LWS_WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
"""Set by the LeaderWorkerSet controller on each pod of a group; "0" marks the leader."""

APP = "r1-runtime"
FIELD_MANAGER = "r1-operator"


def selector_labels(name: str) -> dict[str, str]:
    """Labels that select one deployment's pods; stable for the object's lifetime."""
    return {NAME: APP, INSTANCE: name}


def common_labels(name: str, component: str) -> dict[str, str]:
    """Labels on every child of the DeepSeekDeployment `name`."""
    return {
        **selector_labels(name),
        COMPONENT: component,
        MANAGED_BY: FIELD_MANAGER,
        PART_OF: "r1-operator",
        DEPLOYMENT: name,
    }


def is_retained(child: Mapping[str, Any]) -> bool:
    """Whether a child carries RETAIN "true": the operator neither owns nor deletes it."""
    return (child["metadata"].get("labels") or {}).get(RETAIN) == "true"
