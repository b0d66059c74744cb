"""Load a Hugging Face safetensors checkpoint into one of our models, fusing projections."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from r1_runtime.model_info import ModelInfo
from r1_runtime.models.base import PagedCausalLM, Shard
from r1_runtime.models.fp8 import FP8_DTYPES, Block, dequantize_blocks
from r1_runtime.models.parallel import ModelShard, TensorSlice
from r1_runtime.models.registry import OwnModel
from r1_runtime.models.safetensors_file import SafetensorsFile

logger = logging.getLogger(__name__)

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved
SCALE_SUFFIX = ".weight_scale_inv"  # fp8 block scales, read with their weight


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
    kept = {  # NOTE: fp8 weights (--precision fp8) and the fp32 ones stay as they are
        name: param.dtype
        for name, param in model.named_parameters()
        if param.dtype in FP8_DTYPES or name.endswith(model.fp32_parameters)
    }
    model = model.to(dtype=dtype)
    for name, param in model.named_parameters():
        if name in kept:
            param.data = param.data.to(kept[name])
    model = model.to_empty(device=device)
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
    slices only). fp8 weights with block scales (`<name>_scale_inv`) are dequantized into
    the model's dtype as they are read."""
    params = dict(model.named_parameters())  # NOTE: a tied lm_head.weight is not listed
    filled: set[tuple[str, Shard | None]] = set()
    bytes_read = 0
    model.side_tensors = {}
    files = [SafetensorsFile(path) for path in checkpoint_files(model_dir)]
    try:
        where = {name: f for f in files for name in f.names()}
        for name, f in where.items():
            if name.endswith(IGNORED_SUFFIXES):
                continue
            if model.keeps_as_is(name):
                model.side_tensors[name] = f.read(name)
                bytes_read += model.side_tensors[name].nbytes
                continue
            if name.endswith(SCALE_SUFFIX):
                continue
            found = model.checkpoint_target(name)
            if found is None:
                continue
            param_name, shard = found
            if param_name not in params:
                if name == "lm_head.weight" and model.config.tie_word_embeddings:
                    continue
                raise ValueError(f"checkpoint tensor {name!r} has no parameter in the model")
            target: torch.Tensor = params[param_name]
            if shard is not None:
                target = model.shard_view(param_name, target, shard)
            part = model.checkpoint_slice(param_name, shard)
            tensor = f.read(name, part)
            bytes_read += tensor.nbytes
            scale_name = name + SCALE_SUFFIX.removeprefix(".weight")
            if tensor.dtype in FP8_DTYPES:
                if scale_name not in where:
                    raise ValueError(f"{name!r} is fp8 but {scale_name!r} is missing")
                block = getattr(model.config, "fp8_block", None)
                if block is None:
                    raise ValueError(f"{name!r} is fp8 but config.json names no weight_block_size")
                tensor = _fp8_weight(
                    param_name, params, target, tensor, where, scale_name, part, block
                )
            _fill(target, tensor, name)
            filled.add((param_name, shard))
    finally:
        for f in files:
            f.close()
    missing = model.expected_shards(list(params)) - filled
    if missing:
        raise ValueError(f"parameters missing from the checkpoint: {sorted(map(str, missing))}")
    if model.side_tensors:
        size = sum(tensor.nbytes for tensor in model.side_tensors.values())
        logger.info(
            "kept %d tensors (%.1f MB) as stored, not run: %s...",
            len(model.side_tensors),
            size / 1e6,
            next(iter(model.side_tensors)),
        )
    return bytes_read


def _fp8_weight(
    param_name: str,
    params: dict[str, torch.nn.Parameter],
    target: torch.Tensor,
    tensor: torch.Tensor,
    where: dict[str, SafetensorsFile],
    scale_name: str,
    part: TensorSlice | None,
    block: Block,
) -> torch.Tensor:
    """What to copy into `target` for an fp8 checkpoint tensor (this rank's `part` of it):
    dequantized into the target's dtype; or, for a parameter the model keeps in fp8, the fp8
    values as stored, their block scales copied into `<param>_scale_inv`."""
    scale = where[scale_name].read(scale_name)  # NOTE: whole: 1 / (b0 * b1) of the weight
    first_row = part.start if part is not None and part.dim == 0 else 0
    first_col = part.start if part is not None and part.dim == 1 else 0
    if target.dtype not in FP8_DTYPES:
        return dequantize_blocks(
            tensor, scale, block, target.dtype, first_row=first_row, first_col=first_col
        )
    rows, cols = tensor.shape
    if first_row % block[0] or first_col % block[1]:
        raise ValueError(
            f"{param_name}: this rank's slice starts inside a {block} fp8 block: choose a "
            "--tensor-parallel-size whose slices are whole blocks, or serve without "
            "--precision fp8"
        )
    r0, c0 = first_row // block[0], first_col // block[1]
    r1, c1 = r0 + -(-rows // block[0]), c0 + -(-cols // block[1])
    _scale_view(params[param_name], target, params[f"{param_name}_scale_inv"], block).copy_(
        scale[r0:r1, c0:c1]
    )
    return tensor


def _scale_view(
    param: torch.Tensor, target: torch.Tensor, scale: torch.Tensor, block: Block
) -> torch.Tensor:
    """The block scales of `target`, a run of whole rows of `param` (or of one expert's
    matrix in a stack of them)."""
    offset = int(target.storage_offset() - param.storage_offset())
    if param.dim() == 3:
        expert, offset = divmod(offset, param.stride(0))
        scale, param = scale[expert], param[expert]
    first = offset // param.stride(0) // block[0]
    return scale[first : first + -(-target.shape[0] // block[0])]


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
