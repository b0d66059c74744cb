"""The DeepSeekDeployment API: the single source of truth for spec, status and the CRD.

Every model here forbids unknown fields and uses camelCase aliases, as Kubernetes does.
Attribute docstrings become the CRD's field descriptions; cross-field rules live twice by
design: as `x-kubernetes-validations` CEL rules (enforced by the API server at admission)
and as pydantic validators with the same meaning (enforced by the operator, which also
serves `r1-operator render` and clusters that skip CEL). A test keeps the pair in step.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "r1-operator.dev"
VERSION = "v1alpha1"
KIND = "DeepSeekDeployment"
PLURAL = "deepseekdeployments"
API_VERSION = f"{GROUP}/{VERSION}"

RUNTIME_IMAGE = "ghcr.io/r1-operator/r1-runtime"
RUNTIME_VERSION = "0.1.0"

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _quantity_to_str(value: object) -> object:
    # NOTE: only integers: the CRD's int-or-string rejects `1.5`, so pydantic must too.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    Field(pattern=QUANTITY_PATTERN),
    WithJsonSchema(
        {
            # The API server accepts only this exact anyOf beside int-or-string
            # (isIntOrStringAnyOfPattern in apiextensions-apiserver), so the pattern sits
            # beside it, as controller-gen puts it.
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity such as `8`, `500m`, `64Gi`."""

ResourceName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry; `field_path` points the error at a field."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def cel_rules(*rules: JsonDict) -> JsonDict:
    """JSON-schema extra carrying CEL rules into the CRD (see crd.py)."""
    return {"x-kubernetes-validations": list(rules)}


class Spec(BaseModel):
    """Base of every API object: camelCase aliases, no unknown fields, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


# --- model ---------------------------------------------------------------------------


class SecretKeyRef(Spec):
    """A key in a Secret in the deployment's namespace."""

    name: ResourceName
    """Name of the Secret."""
    key: str = Field(min_length=1, max_length=253)
    """Key within the Secret."""


class HuggingFaceSource(Spec):
    """Download from a Hugging Face repository (or a private mirror set by HF_ENDPOINT)."""

    repo: str = Field(min_length=3, pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
    """Repository id, e.g. `deepseek-ai/DeepSeek-R1-Distill-Qwen-7B`."""
    revision: str = Field(default="main", min_length=1)
    """Branch, tag or commit; pin a commit for reproducible deployments."""
    token_secret_ref: SecretKeyRef | None = None
    """Secret key holding an access token for gated or private repositories."""


class PvcSource(Spec):
    """Weights already on an existing PersistentVolumeClaim (mounted read-only)."""

    claim_name: ResourceName
    """Name of the existing claim in the deployment's namespace."""
    path: str = Field(default="/", pattern=r"^/")
    """Directory inside the claim that holds config.json and the weights."""


class UriSource(Spec):
    """Download from an object store or web server."""

    uri: str = Field(pattern=r"^(s3|gs|https?|oci)://.+")
    """Location of the model directory: s3://, gs://, http(s):// or oci://."""
    credentials_secret_ref: SecretKeyRef | None = None
    """Secret key with credentials for the store, passed to the fetcher."""


class ModelSource(Spec):
    """Where the weights come from: exactly one of huggingFace, pvc or uri."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "(has(self.huggingFace) ? 1 : 0) + (has(self.pvc) ? 1 : 0)"
                " + (has(self.uri) ? 1 : 0) == 1",
                "set exactly one of model.source.huggingFace, model.source.pvc, model.source.uri",
            )
        )
    )

    hugging_face: HuggingFaceSource | None = None
    """Hugging Face repository."""
    pvc: PvcSource | None = None
    """Existing PersistentVolumeClaim."""
    uri: UriSource | None = None
    """Object store or web location."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        chosen = [name for name in ("hugging_face", "pvc", "uri") if getattr(self, name)]
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one of model.source.huggingFace, model.source.pvc, "
                f"model.source.uri (got {len(chosen)})"
            )
        return self


class Model(Spec):
    """The model to serve."""

    name: str = Field(min_length=1, max_length=256)
    """Served model name (the OpenAI `model` field), e.g. `deepseek-ai/DeepSeek-R1-Distill-Qwen-7B`.
    Known DeepSeek-R1 names also select the capacity planner's architecture."""
    source: ModelSource
    """Where the weights come from."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Data type the weights are loaded in; `auto` follows the checkpoint's config.json."""
    quantization: Literal["fp8", "int8", "awq", "gptq"] | None = None
    """Weight quantization scheme; unset for unquantized weights."""


# --- resources and parallelism -----------------------------------------------------------


class Resources(Spec):
    """Compute resources of each pod."""

    gpus: int = Field(default=1, ge=0, le=16)
    """NVIDIA GPUs per pod (`nvidia.com/gpu`); 0 runs on CPU."""
    gpu_product: str | None = Field(default=None, max_length=63)
    """Value of the node label `nvidia.com/gpu.product`, e.g. `NVIDIA-H100-80GB-HBM3`;
    pins pods to that GPU and sizes the capacity check."""
    cpu: Quantity = "8"
    """CPU request and limit."""
    memory: Quantity = "64Gi"
    """Memory request and limit."""
    extra_requests: dict[str, Quantity] = Field(default_factory=dict)
    """Further resource requests, e.g. `ephemeral-storage`."""
    extra_limits: dict[str, Quantity] = Field(default_factory=dict)
    """Further resource limits, e.g. `rdma/hca`."""


class Parallelism(Spec):
    """How one replica's model is split: tensor x pipeline ranks over `nodes` pods."""

    tensor: int = Field(default=1, ge=1, le=64)
    """Tensor-parallel ranks."""
    pipeline: int = Field(default=1, ge=1, le=64)
    """Pipeline-parallel stages."""
    nodes: int = Field(default=1, ge=1, le=64)
    """Pods (nodes) per replica; more than 1 runs a LeaderWorkerSet group per replica."""


# --- engine ------------------------------------------------------------------------------


class Backend(StrEnum):
    AUTO = "auto"
    TENSORRT = "tensorrt"
    COMPILE = "compile"
    EAGER = "eager"


class Engine(Spec):
    """Inference engine settings passed to r1-runtime."""

    backend: Backend = Backend.AUTO
    """`tensorrt` (NVIDIA GPUs), `compile` (torch.compile), `eager`;
    `auto` picks tensorrt with GPUs and compile without."""
    precision: Literal["auto", "bf16", "fp16", "fp32", "fp8", "int8"] = "auto"
    """Compute precision of the built engine; `auto` follows model.dtype."""
    max_batch_tokens: int = Field(default=8192, ge=16, le=1_048_576)
    """Token budget of one engine step (decode tokens plus prefill chunk)."""
    max_num_seqs: int = Field(default=256, ge=1, le=4096)
    """Most sequences running at once."""
    max_model_len: int | None = Field(default=None, ge=16, le=1_048_576)
    """Longest prompt plus completion; unset takes the model's own limit."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0.1, le=0.99)
    """Fraction of each GPU's memory the runtime may use for weights and KV cache."""
    build_on_start: bool = True
    """Build the engine on first start when the warm tier has none cached."""
    prebuild: bool = False
    """Build the engine in a one-off Job `<name>-prebuild-<hash>` (`r1-runtime build`, a
    serving pod's image, volumes and GPUs) before the workload rolls out, so replicas start
    from the cache; a running workload keeps its old spec until the Job succeeds. A failed
    Job sets phase Failed; delete the Job to retry. Single-node replicas only."""


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


class NetworkPolicySpec(Spec):
    """Ingress to the API: only from the listed namespaces and pods."""

    enabled: bool = True
    """Render NetworkPolicies: ingress to the serving pods as below, none to the pre-build
    Job's pod."""
    allowed_namespaces: list[Annotated[str, Field(pattern=DNS_LABEL)]] = Field(default_factory=list)
    """Namespaces whose pods may call the API (all their pods)."""
    allowed_pod_labels: list[dict[str, str]] = Field(default_factory=list)
    """Label sets of pods in the deployment's namespace that may call the API."""
    metrics_namespaces: list[Annotated[str, Field(pattern=DNS_LABEL)]] = Field(
        default_factory=lambda: ["monitoring"]
    )
    """Namespaces of the metrics scraper (Prometheus), allowed on the API port."""


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"{pattern!r} is not a valid regular expression (Python re): {error}; "
            "escape characters meant literally, such as ( [ . *, with a backslash"
        ) from None
    return pattern


def _matches_something(pattern: str) -> str:
    """The runtime's rule (r1_runtime/security/settings.py `_deny`): a deny pattern that
    matches the empty string matches every prompt, so the runtime refuses to start."""
    if re.search(pattern, "") is not None:
        raise ValueError(
            f"{pattern!r} matches the empty string, so the runtime would refuse every prompt "
            "(and does not start); make it require at least one character, e.g. x+ not x?"
        )
    return pattern


Regex = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_compiles)]
"""A regular expression in Python `re` syntax (the runtime compiles it as is)."""
DenyPattern = Annotated[Regex, AfterValidator(_matches_something)]
"""A Regex that does not match the empty string."""


class InputFilter(Spec):
    """Prompts the runtime refuses with 400 before they reach the engine."""

    deny_patterns: list[DenyPattern] = Field(default_factory=list, max_length=256)
    """Regular expressions (Python `re`); a prompt any of them matches (`re.search`) is refused.
    A pattern that matches the empty string (`x?`, `a*`, `^`) would refuse every prompt and is
    refused itself."""
    max_prompt_chars: int | None = Field(default=None, ge=1)
    """Longest prompt in characters of the text the model reads (chat template applied);
    unset: only the model's limit."""


class RedactionPattern(Spec):
    """One redaction: a match becomes `[REDACTED:<name>]`."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_.-]+$")
    """Label in the replacement text."""
    regex: Regex
    """Regular expression (Python `re`)."""


Builtin = Literal["secrets", "pii"]
BUILTIN_REDACTIONS: tuple[Builtin, ...] = ("pii", "secrets")


class OutputRedaction(Spec):
    """What the runtime redacts from completions, streamed ones included."""

    builtins: list[Builtin] = Field(
        default_factory=lambda: list(BUILTIN_REDACTIONS),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """The runtime's own pattern sets: `secrets` (keys, tokens), `pii` (e-mail, phone, card
    numbers); an empty list turns them off."""
    patterns: list[RedactionPattern] = Field(default_factory=list, max_length=256)
    """More patterns."""


class Audit(Spec):
    """Audit log of requests: JSON lines on the cold tier, hash-chained."""

    enabled: bool = True
    """Write the audit log (who, when, model, token counts)."""
    include_prompts: bool = False
    """Also log prompts and completions."""


class Security(Spec):
    """Network isolation, content filters and the audit log."""

    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    """Ingress NetworkPolicy."""
    input_filter: InputFilter = Field(default_factory=InputFilter)
    """Prompts refused before the engine."""
    output_redaction: OutputRedaction = Field(default_factory=OutputRedaction)
    """Redaction of secrets and personal data in completions."""
    audit: Audit = Field(default_factory=Audit)
    """Audit log."""


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
