"""The real `compile` backend end to end, as the pre-build Job and the pod run it: `r1-runtime
build` fills a fresh engine cache with the demo model's torch.compile artifacts (the session's
`compiled_cache`), then `r1-runtime serve --no-build-on-start` (which cannot build) starts from
that entry and answers, and a second `build` finds it."""

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
import pytest

from ..conftest import BUILD_TIMEOUT_S, CompiledCache
from ..server.harness import is_ready, wait_until

pytestmark = pytest.mark.slow


def test_build_fills_the_cache_with_compiled_graphs_and_native_kernels(
    compiled_cache: CompiledCache,
) -> None:
    assert compiled_cache.result["built"] is True
    entry = compiled_cache.entry
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["key"] == compiled_cache.result["engineCacheKey"] and manifest["totalBytes"] > 0
    inputs = manifest["inputs"]
    assert (inputs["backend"], inputs["device"]["type"]) == ("compile", "cpu")
    assert any((entry / "inductor" / "fxgraph").rglob("*"))
    assert list((entry / "native").glob("r1_native_*.so"))
    report = re.search(r"compile backend ready from .*: (.*)", compiled_cache.log)
    assert report is not None, compiled_cache.log[-4000:]
    assert int(re.findall(r"fx_graph_misses=(\d+)", report.group(1))[0]) > 0


def test_serve_starts_from_the_built_entry_and_a_second_build_finds_it(
    compiled_cache: CompiledCache, tmp_path: Path
) -> None:
    entry = compiled_cache.entry
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "r1_runtime.cli", "serve", *compiled_cache.flags]
    command += ["--port", str(port), "--no-build-on-start"]
    log = tmp_path / "serve.log"
    process = subprocess.Popen(command, stderr=log.open("w"), env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        wait_until(lambda: is_ready(base, process), BUILD_TIMEOUT_S)
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

    again = [sys.executable, "-m", "r1_runtime.cli", "build", *compiled_cache.flags]
    done = subprocess.run(again, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout) == {**compiled_cache.result, "built": False}
