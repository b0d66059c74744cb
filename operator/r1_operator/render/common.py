"""Names, paths and metadata every builder shares, so no two builders can disagree."""

from __future__ import annotations

from typing import Any, Literal

from r1_operator import labels
from r1_operator.api import DeepSeekDeployment

Manifest = dict[str, Any]
Tier = Literal["hot", "warm", "cold"]
TIERS: tuple[Tier, ...] = ("hot", "warm", "cold")

# Values of labels.COMPONENT.
SERVER = "server"
STORAGE = "storage"
CONFIG = "config"
PREBUILD = "prebuild"
PREBUILD_APP = "r1-runtime-prebuild"
"""`app.kubernetes.io/name` of pre-build pods: not the serving pods' (labels.APP)."""

# Where things live inside the pods (the runtime flag contract in docs/runtime-flags.md).
MODELS_DIR = "/models"
CACHE_DIR = "/cache"
ENGINE_CACHE_DIR = f"{CACHE_DIR}/engines"
LOGS_DIR = "/logs"
CONFIG_DIR = "/etc/r1-runtime"
SETTINGS_FILE = "settings.json"
SECRETS_DIR = "/var/run/secrets/r1-runtime"
TMP_DIR = "/tmp"

CONFIG_MAP_SUFFIX = "runtime"
HTTP_PORT_NAME = "http"
RENDEZVOUS_PORT = 29500
"""torch.distributed rendezvous port on the leader of a multi-node group."""


def metadata(
    dsd: DeepSeekDeployment,
    component: str,
    suffix: str = "",
    *,
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Manifest:
    """`metadata` of a child: name `<dsd>[-suffix]`, the namespace, the common labels."""
    meta: Manifest = {
        "name": f"{dsd.name}-{suffix}" if suffix else dsd.name,
        "namespace": dsd.namespace,
        "labels": {**labels.common_labels(dsd.name, component), **(extra_labels or {})},
    }
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return meta


def config_map_name(dsd: DeepSeekDeployment) -> str:
    return f"{dsd.name}-{CONFIG_MAP_SUFFIX}"


def claim_name(dsd: DeepSeekDeployment, tier: Tier) -> str:
    """Name of the claim a tier's volume mounts: the existing claim, or the one we render."""
    existing = getattr(dsd.spec.storage, tier).existing_claim
    return str(existing) if existing else f"{dsd.name}-{tier}"


def workload_name(dsd: DeepSeekDeployment) -> str:
    """The Deployment is `<name>`; a LeaderWorkerSet is `<name>-lws`.

    NOTE: the LWS controller creates a headless Service named after the LWS for its pods'
    DNS (LWS_LEADER_ADDRESS resolves through it) and skips creation when one exists, so the
    LWS must not share its name with our API Service `<name>`.
    """
    return f"{dsd.name}-lws" if dsd.spec.is_multi_node else dsd.name


def serving_selector(dsd: DeepSeekDeployment) -> dict[str, str]:
    """Labels of the pods that serve the API: every pod, or only group leaders (multi-node).

    Use it for the Service and for `status.selector` (the HPA averages pod metrics over it).
    """
    selector = labels.selector_labels(dsd.name)
    if dsd.spec.is_multi_node:
        selector[labels.LWS_WORKER_INDEX] = "0"
    return selector
