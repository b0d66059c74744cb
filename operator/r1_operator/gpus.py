"""GPU types the capacity planner knows, and how node labels name them."""

from __future__ import annotations

import re
from dataclasses import dataclass

GB = 10**9
"""GPU memory is sold in decimal GB."""


@dataclass(frozen=True)
class GpuType:
    """A GPU model: nominal memory (decimal bytes, as sold) and the whole tokens of a
    `nvidia.com/gpu.product` label that identify it (so A10 is not A100, L4 not L40S)."""

    name: str
    memory_bytes: int
    tokens: str
    vendor: str = "NVIDIA"

    @property
    def label(self) -> str:
        return f"{self.vendor} {self.name} ({self.memory_bytes / GB:.0f} GB)"


GPU_TYPES = {
    gpu.name: gpu
    for gpu in (
        GpuType("T4", 16 * GB, "t4"),
        GpuType("A10", 24 * GB, "a10"),
        GpuType("A30", 24 * GB, "a30"),
        GpuType("L4", 24 * GB, "l4"),
        GpuType("A100-40GB", 40 * GB, "a100 40gb"),
        GpuType("A100-80GB", 80 * GB, "a100 80gb"),
        GpuType("H100-80GB", 80 * GB, "h100"),
        GpuType("H200", 141 * GB, "h200"),
        GpuType("RTX-4090", 24 * GB, "4090"),
        GpuType("MI300X", 192 * GB, "mi300x", vendor="AMD"),
    )
}
# A MIG slice has a fraction of the memory; an H100 NVL has 94 GB: size neither from the table.
_OTHER_MEMORY = {"mig", "nvl"}


def gpu_for_product(label: str) -> GpuType | None:
    """The GPU type of a `nvidia.com/gpu.product` label value (`NVIDIA-A100-SXM4-80GB`,
    `Tesla-T4`, `AMD-Instinct-MI300X`) or a table name (`H100-80GB`); None when unknown."""
    tokens = set(re.split(r"[-_\s]+", label.strip().lower()))
    if tokens & _OTHER_MEMORY:
        return None
    return next((gpu for gpu in GPU_TYPES.values() if set(gpu.tokens.split()) <= tokens), None)
