"""Probe budgets derived from the model's size: a 1.5B distill and the 671B model differ by
hours in how long a first start may take.

The startup probe covers a runtime container's start: reading the weights from the hot tier
(the `fetch` init container downloaded them before; init containers have no probes) and,
with the tensorrt or compile backend, building the engine on a cache miss. The rollout's
progress deadline covers the download as well.
"""

from __future__ import annotations

import math

from r1_operator import planner
from r1_operator.api import Backend, DeepSeekDeployment
from r1_operator.shapes import weight_bytes

PROBE_PERIOD_SECONDS = 10
BASE_SECONDS = 300
"""Image start, Python and CUDA imports, NCCL set-up and a warm-up step."""
LOAD_BYTES_PER_SECOND = 100e6
"""Reading safetensors from a network volume into GPU memory: conservative (NVMe-backed
volumes do 1-2 GB/s)."""
BUILD_BYTES_PER_SECOND = 40e6
"""Engine build per byte of weights (TensorRT builds take tens of minutes for 70B models
on one GPU); torch.compile is faster, but one rate keeps the formula simple."""
DOWNLOAD_BYTES_PER_SECOND = 50e6
"""Hugging Face or object store to the hot tier: conservative."""
FLOOR_SECONDS = 900
"""Never less than 15 minutes: even a small model may meet a cold node and a busy volume."""
CEILING_SECONDS = 6 * 3600
"""Never more than 6 hours: past that a stuck start should fail and be looked at."""
UNKNOWN_MODEL_SECONDS = 2 * 3600
"""Budget for a model outside the planner's catalog, whose size the operator cannot know."""
DEADLINE_SLACK_SECONDS = 600
"""Scheduling, image pull and readiness on top of fetch plus start."""


def weights_per_pod(dsd: DeepSeekDeployment) -> int | None:
    """Bytes of weights one pod loads (the replica's share over its nodes); None when the
    model is not in the planner's catalog."""
    spec = dsd.spec
    source = spec.model.source.hugging_face
    shape = planner.catalog().get(spec.model.name) or (
        planner.catalog().get(source.repo) if source else None
    )
    if shape is None:
        return None
    dtype = shape.torch_dtype if spec.model.dtype == "auto" else spec.model.dtype
    quantization = spec.model.quantization or shape.native_quantization
    return math.ceil(weight_bytes(shape, dtype, quantization) / spec.parallelism.nodes)


def startup_budget_seconds(dsd: DeepSeekDeployment) -> int:
    """Seconds the startup probe allows a runtime container, as

        clamp(BASE + W / LOAD_RATE + (W / BUILD_RATE if the backend builds), FLOOR, CEILING)

    with W the bytes of weights one pod loads (weights_per_pod). The eager backend builds
    nothing. A model outside the catalog gets UNKNOWN_MODEL_SECONDS. Callers may rely on:
    the budget grows with the model, and stays within [FLOOR, CEILING]."""
    weights = weights_per_pod(dsd)
    if weights is None:
        return UNKNOWN_MODEL_SECONDS
    seconds = BASE_SECONDS + weights / LOAD_BYTES_PER_SECOND
    if dsd.spec.resolved_backend != Backend.EAGER:
        seconds += weights / BUILD_BYTES_PER_SECOND
    return int(min(max(math.ceil(seconds), FLOOR_SECONDS), CEILING_SECONDS))


def startup_failure_threshold(dsd: DeepSeekDeployment) -> int:
    """failureThreshold of the startup probe: threshold x PROBE_PERIOD_SECONDS >= the budget."""
    return math.ceil(startup_budget_seconds(dsd) / PROBE_PERIOD_SECONDS)


def progress_deadline_seconds(dsd: DeepSeekDeployment) -> int:
    """The workload's progressDeadlineSeconds: download (when the source is fetched), then
    the startup budget, plus DEADLINE_SLACK_SECONDS."""
    weights = weights_per_pod(dsd) if dsd.spec.model.source.pvc is None else 0
    download = (weights or 0) * dsd.spec.parallelism.nodes / DOWNLOAD_BYTES_PER_SECOND
    threshold = startup_failure_threshold(dsd) * PROBE_PERIOD_SECONDS
    return threshold + math.ceil(download) + DEADLINE_SLACK_SECONDS
