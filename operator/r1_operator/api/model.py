"""What to serve and how: the model and its source, GPUs, parallelism, the engine."""

from __future__ import annotations

from enum import StrEnum
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
