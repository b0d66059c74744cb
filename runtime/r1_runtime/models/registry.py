"""Which of our model classes runs a checkpoint: `architectures[0]` of its config.json → class.

Adding an architecture is one module with a `PagedCausalLM` subclass plus one line here. A
checkpoint no entry covers, or one whose config its class refuses, runs through the
transformers fallback (`hf_fallback`) instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r1_runtime.model_info import ModelInfo
from r1_runtime.models.base import PagedCausalLM, UnsupportedConfigError
from r1_runtime.models.deepseek_v3 import DeepseekV3ForCausalLM
from r1_runtime.models.llama import LlamaForCausalLM

ARCHITECTURES: dict[str, type[PagedCausalLM]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
    "DeepseekV3ForCausalLM": DeepseekV3ForCausalLM,
}


@dataclass(frozen=True)
class OwnModel:
    """The class of ours that runs a checkpoint, and its config parsed from config.json."""

    model_class: type[PagedCausalLM]
    config: Any


def own_model(info: ModelInfo) -> OwnModel:
    """Raises `UnsupportedConfigError`, saying why, when no model of ours runs `info`."""
    model_class = ARCHITECTURES.get(info.architecture or "")
    if model_class is None:
        raise UnsupportedConfigError(
            f"architecture {info.architecture!r} is not implemented here "
            f"(ours: {', '.join(sorted(ARCHITECTURES))})"
        )
    return OwnModel(model_class, model_class.config_from(info.config))
