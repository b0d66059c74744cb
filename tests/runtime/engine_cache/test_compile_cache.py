"""The real `compile` backend end to end, as the pre-build Job and the pod run it: `r1-runtime
build` fills a fresh engine cache with the demo model's torch.compile artifacts, then
`r1-runtime serve --no-build-on-start` (which cannot build) starts from that entry and
answers, and a second `build` finds it."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..server.harness import is_ready, wait_until

TIMEOUT_S = 600  # torch.compile of the demo model on two shared CPU cores


def engine_flags(model_dir: Path, cache: Path) -> list[str]:
    return [
        *("--model", str(model_dir), "--served-model-name", "r1-demo", "--backend", "compile"),
        *("--max-batch-tokens", "64", "--max-num-seqs", "2", "--max-model-len", "256"),
        *("--num-kv-blocks", "32", "--engine-cache", str(cache)),
    ]


def run_build(model_dir: Path, cache: Path, message: Path) -> dict[str, object]:
    command = [sys.executable, "-m", "r1_runtime.cli", "build", *engine_flags(model_dir, cache)]
    command += ["--termination-message-path", str(message)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, object] = json.loads(message.read_text())
    assert json.loads(done.stdout) == result
    return result


def test_build_fills_the_cache_and_serve_starts_from_it(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    cache, message = tmp_path / "engines", tmp_path / "termination-log"
    built = run_build(demo_model_dir, cache, message)
    assert built["built"] is True
    entry = Path(str(built["entry"]))
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["key"] == built["engineCacheKey"] and manifest["totalBytes"] > 0
    assert (
        manifest["inputs"]["backend"] == "compile" and manifest["inputs"]["device"]["type"] == "cpu"
    )

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "r1_runtime.cli",
        "serve",
        *engine_flags(demo_model_dir, cache),
    ]
    command += ["--port", str(port), "--no-build-on-start"]
    log = tmp_path / "serve.log"
    process = subprocess.Popen(command, stderr=log.open("w"), env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        wait_until(lambda: is_ready(base, process), TIMEOUT_S)
        print(f"serve from the cache: ready in {time.monotonic() - started:.1f} s")
        body = {"model": "r1-demo", "prompt": "Hello", "max_tokens": 8, "temperature": 0}
        answer = httpx.post(f"{base}/v1/completions", json=body, timeout=120)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 8
    finally:
        process.terminate()
        process.wait(60)
    text = log.read_text()
    assert f"engine cache hit: loaded {entry}" in text
    # The compile backend's own report of that load: inductor found every graph in the entry.
    report = re.search(rf"compile backend ready from {re.escape(str(entry))}: (.*)", text)
    assert report is not None, text[-4000:]
    assert "fx_graph_misses=0" in report.group(1)
    assert int(re.findall(r"fx_graph_hits=(\d+)", report.group(1))[0]) > 0
    assert run_build(demo_model_dir, cache, message) == {**built, "built": False}
