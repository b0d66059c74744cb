"""`r1-runtime serve` as the pod runs it: a real process from the command line, a real
SIGTERM, a drain, exit status 0, and logs under --log-dir/$HOSTNAME."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .harness import MODEL, is_ready, wait_until

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 120


def test_sigterm_drains_the_process_and_it_exits_0(demo_model_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"servedModelName": MODEL, "quantization": None}))
    command = [
        *(sys.executable, "-m", "r1_runtime.cli", "serve", "--model", str(demo_model_dir)),
        *("--served-model-name", MODEL, "--port", str(port), "--backend", "eager"),
        *("--max-model-len", "512", "--num-kv-blocks", "64", "--drain-timeout", "30"),
        *("--settings", str(settings), "--log-dir", str(tmp_path / "logs")),
    ]
    env = os.environ | {"HOSTNAME": "pod-0"}
    stderr = tmp_path / "stderr"
    process = subprocess.Popen(command, env=env, stderr=stderr.open("w"), text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: is_ready(base, process), READY_TIMEOUT_S)
        body = {"model": MODEL, "prompt": "Go", "max_tokens": 30, "temperature": 0, "stream": True}
        with (
            httpx.Client(base_url=base, timeout=30) as http,
            http.stream("POST", "/v1/completions", json=body) as stream,
        ):
            events = stream.iter_lines()
            next(events)
            process.send_signal(signal.SIGTERM)
            wait_until(lambda: http.get("/ready").status_code == 503)
            assert http.post("/v1/completions", json={**body, "stream": False}).status_code == 503
            rest = [line for line in events if line]
        assert rest[-1] == "data: [DONE]" and '"finish_reason":"length"' in rest[-2]
        assert process.wait(30) == 0
    finally:
        process.kill()
        process.wait()
    assert "draining" in stderr.read_text()
    assert "draining" in (tmp_path / "logs" / "pod-0" / "runtime.log").read_text()
