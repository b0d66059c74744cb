"""Fixtures shared by the runtime tests: the demo models, the native kernels and a compile
engine, each built once per session."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def _build(tmp_path_factory: pytest.TempPathFactory, arch: str) -> Path:
    # Imported here: r1_runtime.demo loads torch, which the scheduler tests do without.
    from r1_runtime.demo import build_demo_model

    directory = tmp_path_factory.mktemp(f"demo-model-{arch}")
    return build_demo_model(directory, arch=arch, seed=0).directory


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the Qwen2 demo model (seed 0) and its tokenizer. Read-only."""
    return _build(tmp_path_factory, "qwen2")


@pytest.fixture(scope="session")
def demo_deepseek_v3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the DeepseekV3 demo model (seed 0) and its tokenizer. Read-only."""
    return _build(tmp_path_factory, "deepseek_v3")


@pytest.fixture(scope="session")
def native_ops(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The native kernels (`r1_runtime.models.kernels.native`), built once per session."""
    from r1_runtime.models.kernels import native

    if native.load(tmp_path_factory.mktemp("native")) is None:
        pytest.fail("the C++ ops did not build here (g++ and ninja are on this machine)")


# The compile engine the compile tests share: its flags as `r1-runtime serve` and `build` take
# them (a prefill of 40 tokens joins running decodes in chunks of the 48-token budget).
COMPILE_FLAGS = [
    *("--served-model-name", "r1-demo", "--backend", "compile", "--dtype", "float32"),
    *("--max-batch-tokens", "48", "--max-num-seqs", "8", "--max-model-len", "256"),
    *("--num-kv-blocks", "64"),
]
BUILD_TIMEOUT_S = 600  # torch.compile of the demo model on two shared CPU cores


@dataclass(frozen=True)
class CompiledCache:
    """An engine cache holding the demo model's compile engine, and how it was built."""

    flags: list[str]  # the engine flags, --model and --engine-cache included
    result: dict[str, Any]  # what the build printed: engineCacheKey, entry, built
    log: str  # the build's stderr

    @property
    def entry(self) -> Path:
        return Path(self.result["entry"])


@pytest.fixture(scope="session")
def compiled_cache(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> CompiledCache:
    """Built once per session by `r1-runtime build` in a process of its own, as the pre-build
    Job builds it: the compile tests load this entry rather than compile again."""
    cache = tmp_path_factory.mktemp("compiled") / "engines"
    flags = ["--model", str(demo_model_dir), *COMPILE_FLAGS, "--engine-cache", str(cache)]
    command = [sys.executable, "-m", "r1_runtime.cli", "build", *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    return CompiledCache(flags, json.loads(done.stdout), done.stderr)
