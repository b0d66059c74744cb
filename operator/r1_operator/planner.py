"""Capacity planner: does a model fit the GPUs a DeepSeekDeployment asks for?

Pure functions over a Hugging Face `config.json` (bundled for the DeepSeek-R1 family in
`catalog/`) and a table of GPU types. Sizes are decimal GB (10^9 bytes, as GPUs are sold).
Figures are estimates: the runtime measures the real ones at start-up, so the planner only
rejects what cannot work and errs a little on the pessimistic side.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from types import MappingProxyType

from r1_operator.api import DeepSeekDeploymentSpec
from r1_operator.gpus import GB, GpuType, gpu_for_product
from r1_operator.problems import UNSCHEDULABLE, Problem
from r1_operator.shapes import DTYPE_BYTES, QUANT_BYTES, ModelShape, weight_bytes

# Runtime memory per GPU besides weights and KV cache: CUDA context, cuBLAS/NCCL workspaces and
# CUDA-graph pools (the constant), plus the activation peak of a full-batch forward pass, which
# grows with layer widths and so, roughly, with the weights (the fraction). vLLM measures both
# at start-up by profiling a forward pass; these are estimates sized to err on the safe side.
RUNTIME_OVERHEAD_BYTES = 2**30
ACTIVATION_FRACTION = 0.05
MAX_GPUS = 1024


@dataclass(frozen=True)
class Plan:
    """One replica of a model on `num_gpus` GPUs of one type, `tensor_parallel` per pipeline
    stage: the resolved inputs, and the sizes (bytes) derived from them."""

    shape: ModelShape
    gpu: GpuType
    num_gpus: int
    tensor_parallel: int
    dtype: str
    quantization: str | None
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int

    @property
    def weight_bytes(self) -> int:
        return weight_bytes(self.shape, self.dtype, self.quantization)

    @property
    def weight_bytes_per_gpu(self) -> int:
        return math.ceil(self.weight_bytes / self.num_gpus)

    @property
    def overhead_bytes_per_gpu(self) -> int:
        return RUNTIME_OVERHEAD_BYTES + int(ACTIVATION_FRACTION * self.weight_bytes_per_gpu)

    @property
    def usable_bytes_per_gpu(self) -> int:
        return int(self.gpu.memory_bytes * self.gpu_memory_utilization)

    @property
    def kv_bytes_per_token(self) -> int:
        return self.shape.kv_bytes_per_token(DTYPE_BYTES[self.dtype])

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the replica's KV cache holds after weights and overhead. KV heads split over
        tensor ranks up to one per rank (then replicate), layers over pipeline stages."""
        free = self.usable_bytes_per_gpu - self.weight_bytes_per_gpu - self.overhead_bytes_per_gpu
        tp = self.tensor_parallel
        shards = self.num_gpus // tp * min(tp, self.shape.num_kv_heads)
        return max(0, free) * shards // self.kv_bytes_per_token

    @property
    def fits_weights(self) -> bool:
        return self.weight_bytes_per_gpu + self.overhead_bytes_per_gpu < self.usable_bytes_per_gpu

    @property
    def fits(self) -> bool:
        """Weights, overhead and one full max_model_len sequence fit."""
        return self.kv_capacity_tokens >= self.max_model_len

    @property
    def max_fitting_model_len(self) -> int:
        """The longest maxModelLen that fits, in whole 16-token KV blocks."""
        return self.kv_capacity_tokens // 16 * 16

    @property
    def min_gpus(self) -> int | None:
        """Fewest GPUs of this type (a power of two, all tensor-parallel) for the weights plus
        one max_model_len sequence; at most num_gpus when this plan fits; None past MAX_GPUS."""
        counts = (2**i for i in range(MAX_GPUS.bit_length()))
        least = next((n for n in counts if replace(self, num_gpus=n, tensor_parallel=n).fits), None)
        return min(least or self.num_gpus, self.num_gpus) if self.fits else least

    @property
    def message(self) -> str:
        """One line: it fits, or what it needs, what the GPUs give and what would be valid."""
        what = f"{self.shape.name.rsplit('/', 1)[-1]} in {self.quantization or self.dtype}"
        gpus = f"{self.num_gpus} x {self.gpu.label}"
        if self.fits:
            return f"{what} fits {gpus} with maxModelLen {self.max_model_len}"
        kv = _gb(self.kv_bytes_per_token * self.max_model_len)
        fixes = [f"use at least {self.min_gpus} GPUs of this type"] if self.min_gpus else []
        if self.fits_weights and self.max_fitting_model_len >= 16:
            fixes.insert(0, f"set engine.maxModelLen <= {self.max_fitting_model_len}")
        return (
            f"{what} needs {_gb(self.weight_bytes)} of weights plus {kv} KV for maxModelLen"
            f" {self.max_model_len}; {gpus} at {self.gpu_memory_utilization:.2f} utilisation"
            f" gives {_gb(self.usable_bytes_per_gpu * self.num_gpus)}: "
            + (", or ".join(fixes) or "no number of GPUs of this type is enough")
        )


def _gb(num_bytes: int) -> str:
    return f"{num_bytes / GB:.1f} GB"


def plan(
    shape: ModelShape,
    gpu: GpuType,
    num_gpus: int,
    *,
    dtype: str = "auto",
    quantization: str | None = None,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    max_num_seqs: int = 256,
    tensor_parallel: int | None = None,
) -> Plan:
    """Fit `shape` on `num_gpus` GPUs, `tensor_parallel` per pipeline stage (default: all).
    `auto` dtype is the config's torch_dtype; unset quantization is the checkpoint's own
    (DeepSeek-R1 ships fp8); the KV cache is in the model dtype; max_model_len defaults to
    max_position_embeddings."""
    tp = tensor_parallel or num_gpus
    if num_gpus < 1 or num_gpus % tp:
        raise ValueError(f"{num_gpus} GPUs do not split into tensor-parallel groups of {tp}")
    if dtype not in (*DTYPE_BYTES, "auto") or (quantization and quantization not in QUANT_BYTES):
        raise ValueError(f"unknown dtype {dtype!r} or quantization {quantization!r}")
    return Plan(
        shape=shape,
        gpu=gpu,
        num_gpus=num_gpus,
        tensor_parallel=tp,
        dtype=shape.torch_dtype if dtype == "auto" else dtype,
        quantization=quantization or shape.native_quantization,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len or shape.max_position_embeddings,
        max_num_seqs=max_num_seqs,
    )


# --- catalog and specs -------------------------------------------------------------------


@cache
def catalog() -> Mapping[str, ModelShape]:
    """Shapes of the bundled config.json files, by Hugging Face repo id: a file is named
    `owner--name.json` for `owner/name`."""
    shapes = {}
    for entry in (resources.files("r1_operator") / "catalog").iterdir():
        if entry.name.endswith(".json"):
            repo = entry.name.removesuffix(".json").replace("--", "/", 1)
            config = json.loads(entry.read_text(encoding="utf-8"))
            shapes[repo] = ModelShape.from_config(config, name=repo)
    return MappingProxyType(shapes)


def plan_for_spec(spec: DeepSeekDeploymentSpec, gpu_name: str | None = None) -> Plan | None:
    """Plan one replica of `spec`, on `gpu_name` (a product label or table name) instead of
    resources.gpuProduct when given. None when the model is not in the catalog (looked up by
    model.name, then the Hugging Face source repo), the GPU is unknown or unset, or on CPU."""
    source = spec.model.source.hugging_face
    shape = catalog().get(spec.model.name) or (catalog().get(source.repo) if source else None)
    product = gpu_name or spec.resources.gpu_product
    gpu = gpu_for_product(product) if product else None
    if shape is None or gpu is None or spec.gpus_per_replica == 0:
        return None
    return plan(
        shape,
        gpu,
        spec.gpus_per_replica,
        dtype=spec.model.dtype,
        quantization=spec.model.quantization,
        gpu_memory_utilization=spec.engine.gpu_memory_utilization,
        max_model_len=spec.engine.max_model_len,
        max_num_seqs=spec.engine.max_num_seqs,
        tensor_parallel=spec.parallelism.tensor,
    )


def check_spec(spec: DeepSeekDeploymentSpec) -> list[Problem]:
    """An Unschedulable problem when a catalog model does not fit the requested GPUs: on
    engine.maxModelLen when the weights fit but the context does not, else resources.gpus."""
    result = plan_for_spec(spec)
    if result is None or result.fits:
        return []
    field = "spec.engine.maxModelLen" if result.fits_weights else "spec.resources.gpus"
    return [Problem(field, result.message, UNSCHEDULABLE)]


def format_plan(p: Plan) -> str:
    """A readable multi-line summary, for `r1-operator plan`."""
    shape, pipeline = p.shape, p.num_gpus // p.tensor_parallel
    active = shape.num_active_params / 1e9
    kv_room = f"room for {p.kv_capacity_tokens:,} tokens"
    sequences = p.kv_capacity_tokens // p.max_model_len
    rows = [
        f"model     {shape.name}: {shape.num_params / 1e9:.2f}B parameters ({active:.1f}B"
        f" active per token), {p.quantization or p.dtype}",
        f"gpus      {p.num_gpus} x {p.gpu.label} (tensor {p.tensor_parallel} x pipeline"
        f" {pipeline}), {_gb(p.usable_bytes_per_gpu)} usable per GPU",
        f"weights   {_gb(p.weight_bytes)}, {_gb(p.weight_bytes_per_gpu)} per GPU",
        f"overhead  {_gb(p.overhead_bytes_per_gpu)} per GPU (CUDA context, activations; estimate)",
        f"kv cache  {p.kv_bytes_per_token:,} bytes per token, {kv_room}: maxModelLen"
        f" {p.max_model_len} x {sequences} (maxNumSeqs {p.max_num_seqs})",
        ("fits      " if p.fits else "no fit    ") + p.message,
    ]
    return "\n".join(rows)
