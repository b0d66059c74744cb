"""Our positioned-read safetensors reader returns what the `safetensors` package itself
reads, whole or sliced by rows or columns, and refuses damaged files by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from r1_runtime.models.parallel import TensorSlice
from r1_runtime.models.safetensors_file import SafetensorsError, SafetensorsFile
from safetensors import safe_open
from safetensors.torch import save_file

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.int64]


def tensors(seed: int, rows: int, cols: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    made = {}
    for dtype in DTYPES:
        values = torch.randn(rows, cols, generator=generator) * 8
        made[f"m.{dtype}"] = values.to(dtype)
    made["bias"] = torch.randn(rows, generator=generator)
    made["scalar"] = torch.tensor(3.0)
    return made


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 9), st.integers(1, 9), st.integers(0, 10), st.integers(1, 10), st.integers(0, 9)
)
def test_reads_equal_the_safetensors_package(
    tmp_path_factory: pytest.TempPathFactory, rows: int, cols: int, start: int, size: int, seed: int
) -> None:
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    save_file(tensors(seed, rows, cols), str(path), metadata={"format": "pt"})
    with SafetensorsFile(path) as ours, safe_open(path, framework="pt") as theirs:
        assert sorted(ours.names()) == sorted(theirs.keys())
        for name in theirs.keys():  # noqa: SIM118 - safe_open is not a mapping
            expected = theirs.get_tensor(name)
            if expected.dim() == 0:
                assert torch.equal(ours.read(name), expected)
                continue
            assert torch.equal(ours.read(name).view(torch.uint8), expected.view(torch.uint8))
            row_start = min(start, expected.shape[0])
            rows_read = ours.read(name, TensorSlice(0, row_start, size))
            assert torch.equal(
                rows_read.view(torch.uint8), expected[row_start : start + size].view(torch.uint8)
            )
            if expected.dim() == 2:
                col_start = min(start, expected.shape[1])
                cols_read = ours.read(name, TensorSlice(1, col_start, size))
                want = expected[:, col_start : start + size].contiguous()
                assert torch.equal(cols_read.view(torch.uint8), want.view(torch.uint8))


def test_a_truncated_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SafetensorsError, match="do not fit"):
        SafetensorsFile(path)
    path.write_bytes(b"\x01")
    with pytest.raises(SafetensorsError, match="too short"):
        SafetensorsFile(path)
