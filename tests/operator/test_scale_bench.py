"""bench/operator_scale.py at N=3: its figures come from the emulator's request log, and the
operator meets the benchmark's targets (no write on a no-op resync, one apply per child per
generation, one status write per created deployment)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "operator_scale.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("operator_scale", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_scale_bench_at_n_3_meets_its_targets() -> None:
    bench = load_bench()
    figures = bench.run(n=3, drift=1.0, timeout=30.0)
    children = figures.children_per_deployment
    assert figures.resync_reconciles >= 3
    assert figures.writes_per_noop_resync == 0, figures.noop_writes
    create = figures.applies_per_child_create
    assert (create["max"], create["children_applied"]) == (1, 3 * children)
    assert figures.applies_per_child_update["max"] == 1
    assert figures.writes_per_deployment_create["patch status"] == 1.0
    assert figures.requests_per_deployment["apply"] == children
