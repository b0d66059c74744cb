"""Load a Hugging Face safetensors checkpoint into one of our models, fusing projections."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from r1_runtime.model_info import ModelInfo
from r1_runtime.models.base import PagedCausalLM, Shard
from r1_runtime.models.parallel import ModelShard
from r1_runtime.models.registry import OwnModel
from r1_runtime.models.safetensors_file import SafetensorsFile

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved


def load_model(
    own: OwnModel,
    info: ModelInfo,
    *,
    dtype: torch.dtype,
    device: torch.device,
    max_positions: int,
    shard: ModelShard | None = None,
) -> PagedCausalLM:
    """`own.model_class` (the part `shard` names, all of it by default) filled from
    `info.directory` (*.safetensors, sharded or not), with position tables for
    `max_positions` positions. Reads only this rank's slices of the checkpoint. Raises if
    any parameter is left unfilled."""
    with torch.device("meta"):
        model = own.model_class(own.config, max_positions, shard)
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
def load_weights(model: PagedCausalLM, model_dir: Path) -> int:
    """Fill every parameter of `model` from the checkpoint; the bytes read (this rank's
    slices only)."""
    params = dict(model.named_parameters())  # NOTE: a tied lm_head.weight is not listed
    filled: set[tuple[str, Shard | None]] = set()
    bytes_read = 0
    for path in checkpoint_files(model_dir):
        with SafetensorsFile(path) as f:
            for name in f.names():
                if name.endswith(IGNORED_SUFFIXES):
                    continue
                held = model.held_parameter(name)
                if held is None:
                    continue
                param_name, shard = _target(held, model.packed_modules)
                if param_name not in params:
                    if name == "lm_head.weight" and model.config.tie_word_embeddings:
                        continue
                    raise ValueError(f"checkpoint tensor {name!r} has no parameter in the model")
                target: torch.Tensor = params[param_name]
                if shard is not None:
                    start, size = model.shard_offset(param_name, shard)
                    target = target[start : start + size]
                tensor = f.read(name, model.checkpoint_slice(param_name, shard))
                _fill(target, tensor, name)
                bytes_read += tensor.nbytes
                filled.add((param_name, shard))
    missing = _expected(params, model.packed_modules) - filled
    if missing:
        raise ValueError(f"parameters missing from the checkpoint: {sorted(map(str, missing))}")
    return bytes_read


def _fill(target: torch.Tensor, tensor: torch.Tensor, name: str) -> None:
    """Copy into `target`; rows past the end of a padded vocabulary's slice become zeros."""
    if (
        target.shape[1:] != tensor.shape[1:]
        or tensor.shape[0] > target.shape[0]
        or (
            tensor.shape[0] < target.shape[0]
            and "embed_tokens" not in name
            and "lm_head" not in name
        )
    ):
        raise ValueError(f"{name!r}: checkpoint shape {tuple(tensor.shape)} != {target.shape}")
    target[: tensor.shape[0]].copy_(tensor)
    target[tensor.shape[0] :].zero_()


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
