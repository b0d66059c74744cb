"""fp8 weights with block scales, DeepSeek-R1's format: `weight` in `float8_e4m3fn` and
`weight_scale_inv[i, j]`, the fp32 factor of the `block` rows `i*b0...` and columns
`j*b1...`. Dequantized at load (the default), or kept in fp8 and dequantized block by block
as each matmul needs its weight (`--precision fp8`: half the memory of bf16)."""

from __future__ import annotations

import torch

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
Block = tuple[int, int]


def dequantize_blocks(
    weight: torch.Tensor,
    scale_inv: torch.Tensor,
    block: Block,
    dtype: torch.dtype,
    *,
    first_row: int = 0,
    first_col: int = 0,
) -> torch.Tensor:
    """`weight` `[rows, cols]` times its block scales, in `dtype`. `first_row` and `first_col`:
    where `weight` starts in the matrix `scale_inv` covers (a rank's slice of it)."""
    rows, cols = weight.shape
    row_blocks = (torch.arange(rows, device=weight.device) + first_row) // block[0]
    col_blocks = (torch.arange(cols, device=weight.device) + first_col) // block[1]
    scales = scale_inv.float()[row_blocks][:, col_blocks]
    return (weight.float() * scales).to(dtype)


def scale_shape(rows: int, cols: int, block: Block) -> tuple[int, int]:
    return -(-rows // block[0]), -(-cols // block[1])
