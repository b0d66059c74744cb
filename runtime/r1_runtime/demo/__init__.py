"""A tiny DeepSeek-R1-shaped model for tests and `make serve`, written offline.

`build_demo_model(directory)` writes random weights in a real architecture plus a small
byte-level BPE tokenizer with R1's special tokens and chat template. transformers'
`AutoModelForCausalLM` and `AutoTokenizer` load the directory; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from r1_runtime.demo.checkpoint import CONFIGS, CONTEXT_LENGTH, save_checkpoint
from r1_runtime.demo.fp8 import quantize_checkpoint
from r1_runtime.demo.tokenizer import (
    ASSISTANT,
    BOS,
    EOS,
    THINK_END,
    THINK_START,
    USER,
    save_tokenizer,
    train_tokenizer,
)

__all__ = [
    "ARCHS",
    "ASSISTANT",
    "BOS",
    "EOS",
    "THINK_END",
    "THINK_START",
    "USER",
    "DemoModel",
    "build_demo_model",
]

ARCHS = tuple(CONFIGS)


@dataclass(frozen=True)
class DemoModel:
    """What `build_demo_model` wrote."""

    directory: Path
    arch: str
    num_parameters: int
    vocab_size: int
    bos_token_id: int
    eos_token_id: int


def build_demo_model(
    directory: Path, arch: str = "qwen2", seed: int = 0, *, fp8: bool = False
) -> DemoModel:
    """Write a demo checkpoint of `arch` (one of `ARCHS`) and its tokenizer into `directory`.

    The directory is created if missing; the files it holds are config.json,
    generation_config.json, model.safetensors, tokenizer.json and tokenizer_config.json,
    overwritten if present. The same arch, seed and library versions give the same bytes.
    With `fp8`, the decoder layers' weights are in R1's fp8 block format (`demo.fp8`).
    The tokenizer does not depend on the seed, and the model's vocabulary is the tokenizer's.
    """
    tokenizer = train_tokenizer()
    bos_token_id, eos_token_id = _token_id(tokenizer, BOS), _token_id(tokenizer, EOS)
    config = CONFIGS[arch](tokenizer.get_vocab_size(), bos_token_id, eos_token_id)
    directory.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tokenizer, directory, CONTEXT_LENGTH)
    num_parameters = save_checkpoint(directory, config, seed)
    if fp8:
        quantize_checkpoint(directory)
    return DemoModel(
        directory=directory,
        arch=arch,
        num_parameters=num_parameters,
        vocab_size=tokenizer.get_vocab_size(),
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    assert token_id is not None, f"the demo tokenizer has {token}"
    return token_id
