"""The device an engine is built for, as the cache key records it.

A GPU engine is specific to the GPU product and compute capability; code inductor generates
for a CPU is specific to its instruction set (an AVX-512 kernel faults on an AVX2 host), so
a CPU is described by its vendor, model name and the ISA flags code generators select on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CPUINFO = Path("/proc/cpuinfo")
# Flags that change what inductor, oneDNN or a hand-written kernel may emit (x86 and arm64).
ISA_FLAGS = frozenset(
    {
        "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512cd",
        "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
        "amx_bf16", "amx_int8", "amx_fp16",
        "asimd", "asimddp", "asimdhp", "sve", "sve2", "bf16", "i8mm", "sme",
    }
)  # fmt: skip


def device_descriptor(device: torch.device, cpuinfo: Path = CPUINFO) -> dict[str, Any]:
    """`{"type": "cuda", "name", "capability"}` or `{"type": "cpu", "vendor", "model",
    "isa", "flags"}`; equal descriptors mean artifacts built on one run on the other."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        return {"type": "cuda", "name": name, "capability": f"{major}.{minor}"}
    return {"type": device.type, **cpu_descriptor(cpuinfo.read_text() if cpuinfo.exists() else "")}


def cpu_descriptor(cpuinfo: str) -> dict[str, Any]:
    """Vendor, model name and ISA flags of the first processor in `/proc/cpuinfo`'s text,
    plus torch's own reading of the vector extension it dispatches to."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # NOTE: one processor is enough: a host's cores share an ISA
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {
        "vendor": fields.get("vendor_id") or fields.get("CPU implementer", "unknown"),
        "model": fields.get("model name") or fields.get("CPU part", "unknown"),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "flags": sorted(flags & ISA_FLAGS),
    }
