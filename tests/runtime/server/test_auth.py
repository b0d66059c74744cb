"""API keys without a server: where they come from, how they are matched, when the file is
read again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from r1_runtime.server.auth import APIKeys


def test_without_keys_every_request_passes() -> None:
    keys = APIKeys()
    assert not keys.is_enabled
    assert keys.verify(None)


@pytest.mark.parametrize(
    ("authorization", "accepted"),
    [
        pytest.param("Bearer env-key", True, id="a key from the environment"),
        pytest.param("bearer env-key", True, id="the scheme in any case"),
        pytest.param("Bearer  env-key ", True, id="surrounding spaces"),
        pytest.param("Bearer env", False, id="a prefix of a key"),
        pytest.param("env-key", False, id="no scheme"),
        pytest.param("Bearer ", False, id="no token"),
        pytest.param(None, False, id="no header"),
    ],
)
def test_bearer_tokens_are_matched_exactly(authorization: str | None, accepted: bool) -> None:
    assert APIKeys(static_keys=("env-key", "other")).verify(authorization) is accepted


def test_a_key_file_with_no_key_refuses_everything(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("\n  \n")
    keys = APIKeys(path)
    assert keys.is_enabled
    assert not keys.verify("Bearer ")
    assert not keys.verify("Bearer anything")


def test_file_and_environment_keys_both_count(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("file-key\n")
    keys = APIKeys(path, ("env-key",))
    assert keys.verify("Bearer file-key") and keys.verify("Bearer env-key")


def test_a_secret_update_swaps_the_keys_and_a_vanished_file_keeps_them(tmp_path: Path) -> None:
    # Kubernetes updates a Secret volume by pointing a symlink at a new directory.
    first, second = tmp_path / "v1", tmp_path / "v2"
    first.mkdir(), second.mkdir()
    (first / "keys").write_text("old\n")
    (second / "keys").write_text("new\n")
    data = tmp_path / "..data"
    data.symlink_to(first)
    keys = APIKeys(data / "keys")
    assert keys.verify("Bearer old")
    data.unlink()
    data.symlink_to(second)
    assert keys.verify("Bearer new") and not keys.verify("Bearer old")
    data.unlink()
    assert keys.verify("Bearer new")  # mid-update: the keys last read stay in force
    assert not os.path.exists(data)
