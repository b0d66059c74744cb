"""The DeepSeekDeployment resource: its spec with the cross-field rules, and its status."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from r1_operator.api.base import (
    DNS_LABEL,
    Spec,
    cel,
    cel_rules,
)
from r1_operator.api.model import (
    Backend,
    Engine,
    Model,
    Parallelism,
    Resources,
)
from r1_operator.api.security import (
    Security,
)
from r1_operator.api.serving import (
    Auth,
    Autoscaling,
    Image,
    Nccl,
    Scheduling,
    Service,
    Tls,
)
from r1_operator.api.storage import (
    Storage,
    StorageTier,
)

# --- the resource ------------------------------------------------------------------------

_SPEC_RULES = cel_rules(
    cel(
        "self.parallelism.tensor * self.parallelism.pipeline == "
        "(self.resources.gpus == 0 ? 1 : self.resources.gpus) * self.parallelism.nodes",
        "parallelism.tensor x parallelism.pipeline must equal resources.gpus x"
        " parallelism.nodes (one rank per GPU; a CPU pod runs one rank)",
        ".parallelism",
    ),
    cel(
        "self.resources.gpus > 0 || self.engine.backend != 'tensorrt'",
        "engine.backend tensorrt needs resources.gpus >= 1; use compile or eager on CPU",
        ".engine.backend",
    ),
    cel(
        "!self.engine.prebuild || self.parallelism.nodes == 1",
        "engine.prebuild needs parallelism.nodes 1: a pre-build Job runs one pod; multi-node"
        " replicas build their engine on first start",
        ".engine.prebuild",
    ),
    cel(
        "self.parallelism.nodes == 1 || [self.storage.hot, self.storage.warm, self.storage.cold]"
        ".all(t, has(t.existingClaim) || !t.accessModes.exists(m, m in "
        "['ReadWriteOnce', 'ReadWriteOncePod']))",
        "storage.<tier>.accessModes must be ReadWriteMany or ReadOnlyMany when"
        " parallelism.nodes > 1: a replica's pods run on several nodes",
        ".storage",
    ),
)
SINGLE_NODE_MODES = {"ReadWriteOnce", "ReadWriteOncePod"}


class DeepSeekDeploymentSpec(Spec):
    """A DeepSeek-R1 (or R1-Distill) model served by r1-runtime on GPU pods."""

    model_config = ConfigDict(json_schema_extra=_SPEC_RULES)

    model: Model
    """The model to serve."""
    replicas: int = Field(default=1, ge=0, le=1000)
    """Serving replicas; each spans parallelism.nodes pods. Owned by the autoscaler if set."""
    resources: Resources = Field(default_factory=Resources)
    """Per-pod compute."""
    parallelism: Parallelism = Field(default_factory=Parallelism)
    """How a replica is split over GPUs and nodes."""
    engine: Engine = Field(default_factory=Engine)
    """Engine build and batching settings."""
    storage: Storage = Field(default_factory=Storage)
    """Storage tiers."""
    nccl: Nccl = Field(default_factory=Nccl)
    """NCCL settings."""
    service: Service = Field(default_factory=Service)
    """API Service."""
    auth: Auth | None = None
    """API key authentication; unset serves without keys."""
    tls: Tls | None = None
    """TLS; unset serves plain HTTP (terminate TLS elsewhere)."""
    autoscaling: Autoscaling | None = None
    """Horizontal autoscaling; unset keeps spec.replicas."""
    scheduling: Scheduling = Field(default_factory=Scheduling)
    """Node placement."""
    security: Security = Field(default_factory=Security)
    """Network policy and content filters."""
    image: Image = Field(default_factory=Image)
    """Runtime image."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> DeepSeekDeploymentSpec:
        ranks = self.parallelism.tensor * self.parallelism.pipeline
        processes = max(self.resources.gpus, 1) * self.parallelism.nodes
        if ranks != processes:
            raise ValueError(
                f"parallelism.tensor x parallelism.pipeline ({ranks}) must equal "
                f"resources.gpus x parallelism.nodes ({processes}): one rank per GPU, "
                "a CPU pod runs one rank"
            )
        if self.resources.gpus == 0 and self.engine.backend == Backend.TENSORRT:
            raise ValueError(
                "engine.backend tensorrt needs resources.gpus >= 1; use compile or eager on CPU"
            )
        if self.engine.prebuild and self.is_multi_node:
            raise ValueError(
                "engine.prebuild needs parallelism.nodes 1: a pre-build Job runs one pod; "
                "multi-node replicas build their engine on first start"
            )
        if self.is_multi_node:
            self._check_multi_node_storage()
        return self

    def _check_multi_node_storage(self) -> None:
        for name in ("hot", "warm", "cold"):
            tier: StorageTier = getattr(self.storage, name)
            if not tier.existing_claim and SINGLE_NODE_MODES & set(tier.access_modes):
                raise ValueError(
                    f"storage.{name}.accessModes must be ReadWriteMany or ReadOnlyMany when "
                    "parallelism.nodes > 1: a replica's pods run on several nodes"
                )

    @property
    def gpus_per_replica(self) -> int:
        return self.resources.gpus * self.parallelism.nodes

    @property
    def is_multi_node(self) -> bool:
        return self.parallelism.nodes > 1

    @property
    def resolved_backend(self) -> Backend:
        """The backend `auto` stands for: TensorRT with GPUs, torch.compile without."""
        if self.engine.backend != Backend.AUTO:
            return self.engine.backend
        return Backend.TENSORRT if self.resources.gpus else Backend.COMPILE


# --- status ------------------------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    BUILDING = "Building"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class Condition(Spec):
    """A Kubernetes condition."""

    type: str = Field(min_length=1, max_length=316)
    """Condition type: Ready, Available, Progressing, ModelCached, EngineBuilt."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str = Field(min_length=1, max_length=1024)
    """CamelCase reason, e.g. InvalidSpec."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail."""
    last_transition_time: str
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The spec generation the condition was computed from."""


class DeepSeekDeploymentStatus(Spec):
    """Observed state, written by the operator only."""

    phase: Phase = Phase.PENDING
    """Pending, Provisioning, Building, Ready, Degraded or Failed."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Ready, Available, Progressing, ModelCached, EngineBuilt."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The spec generation last reconciled."""
    replicas: int = Field(default=0, ge=0)
    """Replicas the workload has (for the scale subresource)."""
    ready_replicas: int = Field(default=0, ge=0)
    """Replicas ready to serve."""
    selector: str | None = None
    """Label selector of the pods (for the scale subresource)."""
    endpoint: str | None = None
    """In-cluster URL of the OpenAI-compatible API."""
    engine_cache_key: str | None = None
    """Key of the engine in the warm-tier cache."""


class DeepSeekDeployment(BaseModel):
    """A parsed DeepSeekDeployment: the identity render needs plus the validated spec."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=52, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    """Starts with a letter (it names the Service); at most 52 characters so pod names of
    multi-node groups (`<name>-lws-<group>-<worker>`) stay within 63."""
    namespace: str = Field(default="default", min_length=1, max_length=63, pattern=DNS_LABEL)
    spec: DeepSeekDeploymentSpec

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> DeepSeekDeployment:
        """Parse a `kind: DeepSeekDeployment` object; raises pydantic.ValidationError."""
        metadata = manifest.get("metadata") or {}
        return cls.model_validate(
            {
                "name": metadata.get("name"),
                "namespace": metadata.get("namespace") or "default",
                "spec": manifest.get("spec"),
            }
        )
