"""A test backend that writes real artifacts (and runs steps as eager does), and a worker
process that builds with it, so races and crashes between processes are real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from r1_runtime.engine.backends.eager import EagerBackend
from r1_runtime.engine_cache.key import cache_key
from r1_runtime.models.kernels import Kernels

WORKER = Path(__file__).with_name("build_worker.py")
ARTIFACT_BYTES = 4096


def make_key(**overrides: Any) -> tuple[str, dict[str, Any]]:
    inputs = {"schema": 1, "backend": "files", **overrides}
    return cache_key(inputs), inputs


@dataclass
class FileBackend(EagerBackend):
    """The eager backend with artifacts: builds by writing `engine.bin` and `graphs/step.txt`,
    loads by reading them back. Appends one line per build to `builds` (a file, so other
    processes' builds count)."""

    builds: Path
    build_seconds: float = 0.0
    gate: threading.Event | None = None  # set: a build may finish
    name: str = "files"
    needs_cache: bool = True
    loaded: list[Path] = field(default_factory=list)

    def versions(self) -> dict[str, str]:
        return {"files": "1"}

    def prepare(
        self, model: Any, kv_cache: torch.Tensor, entry: Path | None, warm_up: Any
    ) -> Kernels:
        assert entry is not None
        self.build_or_load(entry)
        return super().prepare(model, kv_cache, entry, warm_up)

    def build_or_load(self, entry: Path) -> None:
        if (entry / "engine.bin").exists():
            self.loaded.append(entry)
            return
        (entry / "graphs").mkdir()
        (entry / "graphs" / "step.txt").write_text("compiled step\n")
        with self.builds.open("a") as file:  # NOTE: after the first artifact, before the last
            file.write(f"{os.getpid()}\n")
        time.sleep(self.build_seconds)
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        (entry / "engine.bin").write_bytes(os.urandom(ARTIFACT_BYTES))


def count_builds(builds: Path) -> int:
    return len(builds.read_text().splitlines()) if builds.exists() else 0


def start_worker(root: Path, key: str, builds: Path, build_seconds: float) -> subprocess.Popen[str]:
    """`EngineStore(root).get_or_build(key, ...)` in another process; prints its result."""
    command = [sys.executable, str(WORKER), str(root), key, str(builds), str(build_seconds)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def worker_result(process: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result
