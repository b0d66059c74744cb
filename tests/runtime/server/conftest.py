"""Fixtures: the session's shared server (API key required) and clients for it. Tests that
change a server for good (draining, TLS) start their own with `running_server`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .harness import API_KEY, RunningServer, make_config, running_server, wait_until


@pytest.fixture(scope="session")
def api_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "api-keys"
    path.write_text(f"other-key\n{API_KEY}\n")
    return path


@pytest.fixture(scope="session")
def server(demo_model_dir: Path, api_key_file: Path) -> Iterator[RunningServer]:
    """The shared server. Tests leave it idle, with every KV block free."""
    with running_server(
        lambda port: make_config(demo_model_dir, port=port, api_key_file=api_key_file)
    ) as running:
        yield running


@pytest.fixture(scope="session")
def tokenizer(demo_model_dir: Path) -> Any:
    """The demo model's tokenizer, for computing what the server should count."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_dir)


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return server.openai()


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


@pytest.fixture(autouse=True)
def _leaves_no_request_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test on the shared server: no request left, every KV block free."""
    yield
    if "server" in request.fixturenames:
        running: RunningServer = request.getfixturevalue("server")
        wait_until(running.is_idle_with_all_blocks_free)
        assert running.state.num_active == 0
