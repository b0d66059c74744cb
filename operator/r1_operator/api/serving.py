"""Serving around the pods: NCCL, Service, auth, TLS, autoscaling, scheduling, image."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    ConfigDict,
    Field,
    model_validator,
)

from r1_operator.api.base import (
    ENV_NAME,
    RUNTIME_IMAGE,
    RUNTIME_VERSION,
    FreeForm,
    Quantity,
    ResourceName,
    Spec,
    cel,
    cel_rules,
)
from r1_operator.api.model import (
    SecretKeyRef,
)

# --- networking, security, scaling, scheduling --------------------------------------------


class Nccl(Spec):
    """NCCL settings for multi-GPU and multi-node replicas."""

    debug: Literal["", "VERSION", "WARN", "INFO", "TRACE"] = "WARN"
    """NCCL_DEBUG level; empty leaves it unset."""
    socket_ifname: str | None = Field(default=None, max_length=64)
    """NCCL_SOCKET_IFNAME, e.g. `eth0` or `^lo,docker`."""
    blocking_wait: bool = True
    """TORCH_NCCL_BLOCKING_WAIT: collectives time out with an error instead of hanging."""
    ib_disable: bool = False
    """NCCL_IB_DISABLE: turn InfiniBand off (e.g. on nodes without RDMA)."""
    extra_env: dict[Annotated[str, Field(pattern=ENV_NAME)], str] = Field(
        default_factory=dict, max_length=64
    )
    """Further environment variables, e.g. `NCCL_P2P_LEVEL: NVL`."""


class Service(Spec):
    """The Service in front of the replicas."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Service type."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port of the OpenAI-compatible API."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations for the Service, e.g. for a cloud load balancer."""


class Auth(Spec):
    """API key authentication."""

    api_key_secret_ref: SecretKeyRef
    """Secret key holding the accepted API keys, one per line."""


class Tls(Spec):
    """TLS for the API (TLS 1.2 minimum); mutual TLS with a client CA."""

    cert_secret_name: ResourceName
    """Secret of type kubernetes.io/tls with the server certificate and key."""
    client_ca_secret_ref: SecretKeyRef | None = None
    """Secret key with a CA bundle; when set, clients must present a certificate it signed."""


class AutoscalingMetric(StrEnum):
    WAITING_REQUESTS = "waitingRequests"
    KV_CACHE_USAGE = "kvCacheUsage"


class Autoscaling(Spec):
    """Horizontal autoscaling of replicas on a serving metric (needs a metrics adapter)."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            )
        )
    )

    min_replicas: int = Field(default=1, ge=1, le=1000)
    """Fewest replicas."""
    max_replicas: int = Field(ge=1, le=1000)
    """Most replicas."""
    metric: AutoscalingMetric = AutoscalingMetric.WAITING_REQUESTS
    """`waitingRequests` (queued requests per pod) or `kvCacheUsage` (fraction 0-1)."""
    target: Quantity | None = None
    """Average per pod to hold; unset takes 4 waiting requests or 800m (80 %) KV usage."""

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.minReplicas ({self.min_replicas}) must not exceed "
                f"autoscaling.maxReplicas ({self.max_replicas})"
            )
        return self


class Toleration(Spec):
    """A pod toleration, as in the Pod API."""

    key: str | None = None
    """Taint key; empty with operator Exists matches every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """How key and value are compared."""
    value: str | None = None
    """Taint value for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; unset matches all effects."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """How long a NoExecute taint is tolerated."""


class Scheduling(Spec):
    """Where pods may run."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels pods require (added to the GPU product selector)."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Tolerations added to the usual `nvidia.com/gpu` one."""
    affinity: FreeForm | None = None
    """Pod affinity rules, as in the Pod API."""
    priority_class_name: str | None = Field(default=None, max_length=253)
    """PriorityClass of the pods."""
    runtime_class_name: str | None = Field(default=None, max_length=253)
    """RuntimeClass of the pods, e.g. `nvidia`."""


class Image(Spec):
    """The r1-runtime container image."""

    repository: str = Field(default=RUNTIME_IMAGE, min_length=1)
    """Image repository."""
    tag: str = Field(default=RUNTIME_VERSION, min_length=1)
    """Tag, or a digest as `sha256:...`."""
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Image pull policy."""
    pull_secrets: list[ResourceName] = Field(default_factory=list)
    """Names of image pull Secrets."""
