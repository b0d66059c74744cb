"""Fixtures shared by the whole suite."""

from __future__ import annotations

from typing import Any

import pytest
from factories import make_manifest


@pytest.fixture
def manifest() -> dict[str, Any]:
    return make_manifest()
