"""Model code: our own Llama-family decoder (Qwen2, Llama: the R1 distills) over the paged KV
cache, and a transformers fallback (`hf_fallback`, imported on demand) for anything else."""

from r1_runtime.models.config import (
    DecoderConfig,
    UnsupportedConfigError,
    architecture_of,
    eos_token_ids,
    read_config,
)
from r1_runtime.models.decoder import DecoderForCausalLM
from r1_runtime.models.loader import load_decoder

__all__ = [
    "DecoderConfig",
    "DecoderForCausalLM",
    "UnsupportedConfigError",
    "architecture_of",
    "eos_token_ids",
    "load_decoder",
    "read_config",
]
