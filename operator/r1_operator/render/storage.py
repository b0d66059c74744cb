"""PersistentVolumeClaims of the storage tiers (hot: weights, warm: engines, cold: logs)."""

from __future__ import annotations

from r1_operator import labels
from r1_operator.api import DeepSeekDeployment, StorageTier
from r1_operator.render.common import STORAGE, TIERS, Manifest, Tier, metadata


def rendered_tiers(dsd: DeepSeekDeployment) -> list[Tier]:
    """Tiers that get a claim of ours: not an existing claim, and no hot tier when the
    weights come from `model.source.pvc` (that claim is mounted instead)."""
    spec = dsd.spec
    return [
        tier
        for tier in TIERS
        if not getattr(spec.storage, tier).existing_claim
        and not (tier == "hot" and spec.model.source.pvc)
    ]


def build_pvcs(dsd: DeepSeekDeployment) -> list[Manifest]:
    """One PVC `<name>-<tier>` per rendered tier, in hot, warm, cold order."""
    return [_pvc(dsd, tier, getattr(dsd.spec.storage, tier)) for tier in rendered_tiers(dsd)]


def _pvc(dsd: DeepSeekDeployment, tier: Tier, spec: StorageTier) -> Manifest:
    meta = metadata(
        dsd,
        STORAGE,
        tier,
        extra_labels={
            labels.TIER: tier,
            labels.RETAIN: "true" if spec.retain_policy == "Retain" else "false",
        },
    )
    pvc_spec: Manifest = {
        "accessModes": list(spec.access_modes),
        "resources": {"requests": {"storage": spec.size}},
    }
    if spec.storage_class_name is not None:
        pvc_spec["storageClassName"] = spec.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": pvc_spec,
    }
