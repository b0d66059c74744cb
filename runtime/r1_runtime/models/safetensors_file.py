"""Reading tensors, or only a rank's slice of them, from a safetensors file with positioned
reads into the destination's own memory.

The format is an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
byte offsets) and the raw row-major data. Memory-mapping the file (the `safetensors`
package's way) would leave every page a rank touches in its resident set, and a column
slice touches nearly every page of its tensor: a tensor-parallel rank would hold most of the
checkpoint at its peak. Here a row slice is one read, a column slice one read per row, each
straight into the tensor that is returned, so a rank's memory grows by its shard alone.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch

from r1_runtime.models.parallel import TensorSlice

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class SafetensorsError(ValueError):
    """The file is not a safetensors file this reader understands; the message says why."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # of the first byte, from the start of the file

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize


class SafetensorsFile:
    """An open safetensors file: `names()`, then `read(name, part)`. A context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self.tensors = _header(self._fd, path)
        except BaseException:
            os.close(self._fd)
            raise

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        os.close(self._fd)

    def names(self) -> list[str]:
        return list(self.tensors)

    def read(self, name: str, part: TensorSlice | None = None) -> torch.Tensor:
        """Tensor `name`, or only `part` of it (rows of dim 0, or columns of dim 1 of a
        matrix; fewer than `part.size` where the tensor ends first)."""
        info = self.tensors[name]
        if part is None:
            out = torch.empty(info.shape, dtype=info.dtype)
            self._read_into(out, info.offset)
            return out
        end = min(part.start + part.size, info.shape[part.dim])
        if part.dim == 0:
            out = torch.empty((end - part.start, *info.shape[1:]), dtype=info.dtype)
            self._read_into(out, info.offset + part.start * info.row_bytes)
            return out
        if part.dim != 1 or len(info.shape) != 2:
            raise SafetensorsError(f"{self.path}: {name}: only matrices are sliced by column")
        out = torch.empty((info.shape[0], end - part.start), dtype=info.dtype)
        first = info.offset + part.start * info.dtype.itemsize
        for row in range(info.shape[0]):
            self._read_into(out[row], first + row * info.row_bytes)
        return out

    def _read_into(self, tensor: torch.Tensor, offset: int) -> None:
        if not tensor.numel():
            return
        buffer = tensor.reshape(-1).view(torch.uint8).numpy().data
        done = 0
        while done < len(buffer):
            count = os.preadv(self._fd, [buffer[done:]], offset + done)
            if count == 0:
                raise SafetensorsError(f"{self.path}: ends inside a tensor (truncated?)")
            done += count


def _header(fd: int, path: Path) -> dict[str, TensorInfo]:
    size = os.fstat(fd).st_size
    prefix = os.pread(fd, 8, 0)
    if len(prefix) < 8:
        raise SafetensorsError(f"{path}: too short for a safetensors header")
    (length,) = struct.unpack("<Q", prefix)
    if length > size - 8:
        raise SafetensorsError(f"{path}: header length {length} exceeds the file")
    try:
        header = json.loads(os.pread(fd, length, 8))
    except ValueError as error:
        raise SafetensorsError(f"{path}: the header is not JSON: {error}") from error
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(entry["dtype"])
        if dtype is None:
            raise SafetensorsError(f"{path}: {name}: dtype {entry['dtype']} is not supported")
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if end - begin != math.prod(shape) * dtype.itemsize or 8 + length + end > size:
            raise SafetensorsError(f"{path}: {name}: offsets {begin}..{end} do not fit {shape}")
        tensors[name] = TensorInfo(dtype, shape, 8 + length + begin)
    return tensors
