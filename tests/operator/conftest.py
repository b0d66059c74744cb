"""Fixtures for the operator tests: a valid manifest, and one emulated cluster per test module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from factories import make_manifest
from operator_harness import Cluster, emulated_cluster


@pytest.fixture
def manifest() -> dict[str, Any]:
    return make_manifest()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """An emulated API server without the LeaderWorkerSet API, and KUBECONFIG pointing at it."""
    with emulated_cluster(tmp_path_factory.mktemp("kube")) as cluster:
        yield cluster
