"""Load a Hugging Face safetensors checkpoint into one of our models, fusing projections."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from r1_runtime.model_info import ModelInfo
from r1_runtime.models.base import PagedCausalLM, Shard
from r1_runtime.models.registry import OwnModel

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved


def load_model(
    own: OwnModel, info: ModelInfo, *, dtype: torch.dtype, device: torch.device, max_positions: int
) -> PagedCausalLM:
    """`own.model_class` filled from `info.directory` (*.safetensors, sharded or not), with
    position tables for `max_positions` positions. Raises if any parameter is left unfilled."""
    with torch.device("meta"):
        model = own.model_class(own.config, max_positions)
    model = model.to(dtype=dtype).to_empty(device=device)
    model.reset_buffers()
    load_weights(model, info.directory)
    return model.eval()


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The files the sharded index names, else every *.safetensors in the directory."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        return [model_dir / name for name in names]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors checkpoint in {model_dir}")
    return files


@torch.no_grad()
def load_weights(model: PagedCausalLM, model_dir: Path) -> None:
    params = dict(model.named_parameters())  # NOTE: a tied lm_head.weight is not listed
    filled: set[tuple[str, Shard | None]] = set()
    for name, tensor in _checkpoint_tensors(model_dir):
        param_name, shard = _target(name, model.packed_modules)
        if param_name not in params:
            if name == "lm_head.weight" and model.config.tie_word_embeddings:
                continue
            raise ValueError(f"checkpoint tensor {name!r} has no parameter in the model")
        target: torch.Tensor = params[param_name]
        if shard is not None:
            start, size = model.shard_offset(param_name, shard)
            target = target[start : start + size]
        if target.shape != tensor.shape:
            raise ValueError(f"{name!r}: checkpoint shape {tuple(tensor.shape)} != {target.shape}")
        target.copy_(tensor)
        filled.add((param_name, shard))
    missing = _expected(params, model.packed_modules) - filled
    if missing:
        raise ValueError(f"parameters missing from the checkpoint: {sorted(map(str, missing))}")


def _checkpoint_tensors(model_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    for path in checkpoint_files(model_dir):
        with safe_open(path, framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                if not name.endswith(IGNORED_SUFFIXES):
                    yield name, f.get_tensor(name)


def _target(name: str, packed: dict[str, tuple[str, Shard]]) -> tuple[str, Shard | None]:
    """Our parameter name and shard for a checkpoint name (`...q_proj.weight` fills the `q`
    rows of `...qkv_proj.weight`)."""
    parts = name.split(".")
    for index, part in enumerate(parts):
        if part in packed:
            fused, shard = packed[part]
            return ".".join([*parts[:index], fused, *parts[index + 1 :]]), shard
    return name, None


def _expected(
    params: dict[str, torch.nn.Parameter], packed: dict[str, tuple[str, Shard]]
) -> set[tuple[str, Shard | None]]:
    shards_of: dict[str, list[Shard | None]] = {}
    for fused, shard in packed.values():
        shards_of.setdefault(fused, []).append(shard)
    expected: set[tuple[str, Shard | None]] = set()
    for name in params:
        packed_name = next((part for part in name.split(".") if part in shards_of), None)
        shards = shards_of[packed_name] if packed_name is not None else [None]
        expected.update((name, shard) for shard in shards)
    return expected
