"""fp8 block quantization as DeepSeek publishes R1: each linear weight of the decoder layers
in `float8_e4m3fn`, with one fp32 scale per block of 128 x 128 (`<name>_scale_inv`, the
factor that dequantizes), and `quantization_config` in config.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FP8_MAX = torch.finfo(torch.float8_e4m3fn).max


def quantize_block_fp8(
    weight: torch.Tensor, block: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, scale_inv) with `weight ~= fp8 * scale_inv` per block."""
    rows, cols = weight.shape
    grid = (-(-rows // block[0]), -(-cols // block[1]))
    padded = weight.float().new_zeros(grid[0] * block[0], grid[1] * block[1])
    padded[:rows, :cols] = weight.float()
    blocks = padded.view(grid[0], block[0], grid[1], block[1])
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / FP8_MAX
    quantized = (blocks / scale[:, None, :, None]).view_as(padded)[:rows, :cols]
    return quantized.to(torch.float8_e4m3fn), scale


def is_quantized(name: str, tensor: torch.Tensor) -> bool:
    """R1's choice: the decoder layers' projection and expert weights, not the embeddings,
    the norms, the router or the output head."""
    return (
        name.startswith("model.layers.")
        and name.endswith(".weight")
        and tensor.dim() == 2
        and "norm" not in name
        and not name.endswith("mlp.gate.weight")
    )


def quantize_checkpoint(directory: Path, block: tuple[int, int] = (128, 128)) -> None:
    """Rewrite `directory`'s model.safetensors and config.json in R1's fp8 format."""
    path = directory / "model.safetensors"
    tensors = load_file(path)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if is_quantized(name, tensor):
            out[name], out[f"{name}_scale_inv"] = quantize_block_fp8(tensor, block)
        else:
            out[name] = tensor
    save_file(out, path, metadata={"format": "pt"})
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"] = {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": list(block),
    }
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
