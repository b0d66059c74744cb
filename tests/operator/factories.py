"""Shared factories: manifests built from one valid base, changed per test."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def make_manifest(spec_overrides: dict[str, Any] | None = None, **metadata: str) -> dict[str, Any]:
    """A valid DeepSeekDeployment manifest (7B distill on one A100 80GB), deep-merged with
    `spec_overrides`; a value of None removes the key."""
    manifest: dict[str, Any] = {
        "apiVersion": "r1-operator.dev/v1alpha1",
        "kind": "DeepSeekDeployment",
        "metadata": {"name": "r1", "namespace": "ml", **metadata},
        "spec": {
            "model": {
                "name": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                "source": {"huggingFace": {"repo": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}},
            },
            "resources": {"gpus": 1, "gpuProduct": "NVIDIA-A100-SXM4-80GB"},
            "engine": {"maxModelLen": 32768},
        },
    }
    _merge(manifest["spec"], copy.deepcopy(spec_overrides or {}))
    return manifest


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
