"""The engine cache key: a sha256 over everything a built engine depends on.

`key_inputs` gathers them (pure: the caller passes what it measured) and `cache_key` digests
their canonical JSON. Two hosts that would build byte-compatible engines get the same key;
any change to the weights, the build settings, the device or a library version gives a new
one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

KEY_SCHEMA = 2  # bump when the meaning of an input changes; every old entry becomes a miss
DISTRIBUTION = "r1-operator"  # the distribution `r1_runtime` ships in


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: equal values give equal bytes."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def cache_key(inputs: Mapping[str, Any]) -> str:
    """The hex sha256 of `inputs` as canonical JSON."""
    return hashlib.sha256(canonical_json(inputs)).hexdigest()


def key_inputs(
    *,
    model_files: Sequence[Mapping[str, Any]],
    backend: str,
    precision: str,
    dtype: str,
    tensor_parallel_size: int,
    pipeline_parallel_size: int,
    rank: int,
    max_batch_tokens: int,
    max_num_seqs: int,
    max_model_len: int | None,
    device: Mapping[str, Any],
    versions: Mapping[str, str],
    runtime_version: str,
) -> dict[str, Any]:
    """What the key digests, as the JSON object `manifest.json` records under `inputs`.

    `model_files` are `{"path", "size", "sha256"}` for every file of the checkpoint (any
    order); `dtype` is the resolved torch dtype name; `max_model_len` None means the model's
    own limit (already covered by its config.json digest); `rank` is the replica rank whose
    shard the engine holds (0 without parallelism): each rank builds and loads its own."""
    return {
        "schema": KEY_SCHEMA,
        "model": sorted((dict(file) for file in model_files), key=lambda file: file["path"]),
        "backend": backend,
        "precision": precision,
        "dtype": dtype,
        "tensorParallelSize": tensor_parallel_size,
        "pipelineParallelSize": pipeline_parallel_size,
        "rank": rank,
        "maxBatchTokens": max_batch_tokens,
        "maxNumSeqs": max_num_seqs,
        "maxModelLen": max_model_len,
        "device": dict(device),
        "versions": dict(versions),
        "runtime": runtime_version,
    }


def runtime_version() -> str:
    """The installed r1-runtime version; `0+unknown` when run from an uninstalled tree."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"
