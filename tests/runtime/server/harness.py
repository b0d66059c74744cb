"""Real uvicorn servers on loopback serving the demo model, in threads of the test process.

The servers have a deliberately small engine (two running sequences, one waiting, 64 KV
blocks, 512-token context), so 429 and block accounting are reachable in a few requests.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
from r1_runtime.config import RuntimeConfig
from r1_runtime.engine.llm_engine import LLMEngine
from r1_runtime.server.model import Loader, model_loader
from r1_runtime.server.serve import DrainingServer, build_server
from r1_runtime.server.state import ServerState

API_KEY = "test-key-0123456789"
MODEL = "r1-demo"
STARTUP_TIMEOUT_S = 120

SERVER_DEFAULTS: dict[str, Any] = {
    "served_model_name": MODEL,
    "max_num_seqs": 2,
    "max_batch_tokens": 256,
    "max_model_len": 512,
    "max_waiting": 1,
    "num_kv_blocks": 64,
}


def make_config(model_dir: Path, **overrides: Any) -> RuntimeConfig:
    return RuntimeConfig(model=model_dir, **{**SERVER_DEFAULTS, **overrides})


@dataclass
class RunningServer:
    """A started server; `engine` is for reading its state, e.g. free KV blocks."""

    base_url: str
    server: DrainingServer
    thread: threading.Thread

    @property
    def state(self) -> ServerState:
        return self.server.state

    @property
    def engine(self) -> LLMEngine:
        assert self.state.model is not None
        return self.state.model.engine.engine

    def openai(self, **options: Any) -> openai.OpenAI:
        """The official client; no retries, so a 429 or 503 reaches the test."""
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key=API_KEY, max_retries=0, **options
        )

    def http(self, **options: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        return httpx.Client(base_url=self.base_url, headers=headers, **{"timeout": 60, **options})

    def is_idle_with_all_blocks_free(self) -> bool:
        blocks = self.engine.scheduler.block_manager
        return self.engine.scheduler.is_idle and blocks.num_free_blocks == blocks.num_blocks


@contextmanager
def running_server(
    config_for_port: Callable[[int], RuntimeConfig],
    loader: Loader | None = None,
    wait_for_model: bool = True,
) -> Iterator[RunningServer]:
    """Start a server on a free loopback port; stop it (if it has not stopped) on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = config_for_port(sock.getsockname()[1])
    server = build_server(config, loader or model_loader(config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    scheme = "https" if config.tls_cert else "http"
    try:
        wait_until(lambda: server.started, STARTUP_TIMEOUT_S)
        if wait_for_model:
            wait_until(lambda: server.state.model is not None, STARTUP_TIMEOUT_S)
        yield RunningServer(f"{scheme}://127.0.0.1:{config.port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout} s: {condition}")
        time.sleep(0.01)


def is_ready(base: str, process: subprocess.Popen[Any]) -> bool:
    """Whether the `r1-runtime serve` process at `base` answers /ready with 200; fails once
    it has exited."""
    if process.poll() is not None:
        raise AssertionError(f"serve exited with {process.returncode}")
    try:
        return httpx.get(f"{base}/ready").status_code == 200
    except httpx.ConnectError:
        return False
