"""A hub-like loopback server over the demo model, and ways to run the fetcher against it:
in process (`fetch_into`) or as `r1-runtime fetch` subprocesses (`start_cli`)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from r1_runtime.fetch import FetchResult, Options, fetch, parse_source
from r1_runtime.fetch.download import RetryPolicy

from .hub_server import HubServer

TOKEN = "hf_test_token"
FAST = Options(progress_interval_s=0.0, lock_poll_s=0.05, retry=RetryPolicy(backoff_s=0.01))

FetchInto = Callable[..., tuple[FetchResult, str]]


@pytest.fixture
def hub(demo_model_dir: Path) -> Iterator[HubServer]:
    """The demo model as `org/demo` (token required) on a fresh server with an empty log."""
    with HubServer(demo_model_dir, token=TOKEN) as server:
        yield server


@pytest.fixture
def hub_env(hub: HubServer) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN}


@pytest.fixture
def fetch_into(hub_env: dict[str, str]) -> FetchInto:
    """Fetch `hf://org/demo` into `dest` in this process; the result and the log lines."""

    def run(
        dest: Path, revision: str = "main", env: dict[str, str] | None = None
    ) -> tuple[FetchResult, str]:
        source = parse_source(
            "hf://org/demo", revision=revision, credentials_file=None, env=env or hub_env
        )
        out = io.StringIO()
        return fetch(source, dest, out=out, options=FAST), out.getvalue()

    return run


@pytest.fixture
def start_cli(hub_env: dict[str, str]) -> Callable[[Path], subprocess.Popen[str]]:
    """Start `r1-runtime fetch --source hf://org/demo --revision main --dest DEST`."""

    def start(dest: Path) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "r1_runtime.cli", "fetch", "--source", "hf://org/demo"]
        command += ["--revision", "main", "--dest", str(dest)]
        return subprocess.Popen(
            command,
            env=os.environ | hub_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start
