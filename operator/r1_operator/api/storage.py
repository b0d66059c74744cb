"""The storage tiers: hot (weights), warm (engine cache), cold (logs and audit)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    ConfigDict,
    Field,
    model_validator,
)

from r1_operator.api.base import (
    Quantity,
    ResourceName,
    Spec,
    cel,
    cel_rules,
)

# --- storage -----------------------------------------------------------------------------

AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]
RetainPolicy = Literal["Retain", "Delete"]
_TIER_RULES = cel_rules(
    cel(
        "!(has(self.existingClaim) && has(self.storageClassName))",
        "existingClaim and storageClassName are exclusive: an existing claim already has its class",
    )
)


class StorageTier(Spec):
    """One storage tier: a new claim (class, size, access modes) or an existing one."""

    model_config = ConfigDict(json_schema_extra=_TIER_RULES)

    existing_claim: ResourceName | None = None
    """Use this existing claim instead of creating one; it is never deleted."""
    storage_class_name: str | None = Field(default=None, max_length=253)
    """StorageClass of the new claim; unset uses the cluster default."""
    size: Quantity = "10Gi"
    """Requested size of the new claim."""
    access_modes: list[AccessMode] = Field(default=["ReadWriteMany"], min_length=1)
    """Access modes of the new claim; replicas share it, so ReadWriteMany by default."""
    retain_policy: RetainPolicy = "Retain"
    """`Retain` keeps the claim when the deployment is deleted; `Delete` removes it."""

    @model_validator(mode="after")
    def _claim_or_class(self) -> StorageTier:
        if self.existing_claim and self.storage_class_name:
            raise ValueError(
                "existingClaim and storageClassName are exclusive: an existing claim "
                "already has its class"
            )
        return self


class HotTier(StorageTier):
    """Model weights (fast NVMe class), shared read-mostly by replicas."""

    size: Quantity = "200Gi"
    """Requested size of the new claim."""


class WarmTier(StorageTier):
    """Engine cache and checkpoints, shared; builds are locked and published atomically."""

    size: Quantity = "50Gi"
    """Requested size of the new claim."""


class ColdTier(StorageTier):
    """Logs and the audit trail."""

    size: Quantity = "10Gi"
    """Requested size of the new claim."""
    retain_policy: RetainPolicy = "Delete"
    """`Retain` keeps the claim when the deployment is deleted; `Delete` removes it."""


class Storage(Spec):
    """The three storage tiers (hot: weights, warm: engine cache, cold: logs)."""

    hot: HotTier = Field(default_factory=HotTier)
    """Weights; unused when model.source.pvc already holds them."""
    warm: WarmTier = Field(default_factory=WarmTier)
    """Engine cache and checkpoints."""
    cold: ColdTier = Field(default_factory=ColdTier)
    """Logs and audit trail."""
