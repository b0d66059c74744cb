"""A checkpoint directory read once: what the rest of the runtime needs to know of a model
before (and besides) loading its weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1_runtime.files import read_json_object

DEFAULT_MAX_POSITIONS = 4096  # when config.json names no max_position_embeddings


class ModelInfoError(ValueError):
    """config.json (or generation_config.json) cannot be read as a model's configuration."""


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """config.json and generation_config.json of a Hugging Face checkpoint, parsed once.

    `config` is config.json as read, for the model code that parses its own shapes."""

    directory: Path
    config: dict[str, Any]
    architecture: str | None  # `architectures[0]`; None unless there is exactly one
    vocab_size: int
    max_position_embeddings: int
    eos_token_ids: frozenset[int]  # config.json's and generation_config.json's together
    dtype: str | None  # the checkpoint's own dtype name (`dtype`, or the older `torch_dtype`)

    @classmethod
    def read(cls, directory: str | Path) -> ModelInfo:
        """Raises `ModelInfoError` naming the file when it is missing or malformed."""
        directory = Path(directory)
        config = _read_json(directory / "config.json")
        generation_path = directory / "generation_config.json"
        generation = _read_json(generation_path) if generation_path.exists() else {}
        architectures = config.get("architectures") or []
        try:
            vocab_size = int(config["vocab_size"])
        except (KeyError, TypeError, ValueError) as error:
            raise ModelInfoError(f"{directory}/config.json: no integer vocab_size") from error
        dtype = config.get("dtype") or config.get("torch_dtype")
        return cls(
            directory=directory,
            config=config,
            architecture=str(architectures[0]) if len(architectures) == 1 else None,
            vocab_size=vocab_size,
            max_position_embeddings=int(
                config.get("max_position_embeddings") or DEFAULT_MAX_POSITIONS
            ),
            eos_token_ids=token_ids(config.get("eos_token_id"))
            | token_ids(generation.get("eos_token_id")),
            dtype=str(dtype) if dtype else None,
        )


def token_ids(value: int | list[int] | None) -> frozenset[int]:
    """An `eos_token_id` field (an int, a list or null) as a set."""
    if value is None:
        return frozenset()
    return frozenset([value] if isinstance(value, int) else value)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path)
    except ValueError as error:
        raise ModelInfoError(str(error)) from error
