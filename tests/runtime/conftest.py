"""Fixtures shared by the runtime tests: the demo models, built once per session."""

from __future__ import annotations

from pathlib import Path

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
    """The C++ ops and decoder (`r1_runtime.models.native`), built once per session."""
    from r1_runtime.models import native

    if not native.load(tmp_path_factory.mktemp("native")):
        pytest.fail("the C++ ops did not build here (g++ and ninja are on this machine)")
