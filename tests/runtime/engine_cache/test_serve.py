"""`serve` with the engine cache: a miss builds while /health is 200 and /ready says
`building`; the next start loads the entry without building; `--no-build-on-start` stops
with the key, the path and the fix; eager touches no cache. The backend is the file backend
of fakes.py (real files, real lock), so these tests do not depend on torch.compile."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest
from r1_runtime import build, plan
from r1_runtime.cli import main
from r1_runtime.config import RuntimeConfig
from r1_runtime.engine.sequence import SamplingParams
from r1_runtime.engine_cache.manifest import MANIFEST
from r1_runtime.engine_cache.store import EngineStore
from r1_runtime.model_info import ModelInfo

from ..server.harness import make_config, running_server, wait_until
from .fakes import FileBackend, count_builds


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FileBackend:
    files = FileBackend(tmp_path / "builds.log", name="compile", gate=threading.Event())
    monkeypatch.setattr(plan, "get_backend", lambda name, device: files)
    return files


def ready_status(base_url: str) -> tuple[int, str]:
    response = httpx.get(f"{base_url}/ready")
    return response.status_code, response.json()["status"]


def phase_gauge(base_url: str) -> str:
    text = httpx.get(f"{base_url}/metrics").text
    (phase,) = re.findall(r'^r1_runtime:phase\{.*phase="(\w+)"\} 1\.0$', text, re.MULTILINE)
    return phase


def test_a_miss_builds_while_alive_and_not_ready_then_the_next_start_loads_the_entry(
    demo_model_dir: Path, tmp_path: Path, backend: FileBackend
) -> None:
    cache = tmp_path / "engines"

    def config(port: int) -> RuntimeConfig:
        return make_config(demo_model_dir, port=port, backend="compile", engine_cache=cache)

    with running_server(config, wait_for_model=False) as running:
        wait_until(lambda: ready_status(running.base_url) == (503, "building"), 120)
        assert httpx.get(f"{running.base_url}/health").status_code == 200
        assert phase_gauge(running.base_url) == "building"
        assert backend.gate is not None
        backend.gate.set()
        wait_until(lambda: ready_status(running.base_url) == (200, "ready"), 120)
        assert phase_gauge(running.base_url) == "ready"
    (entry,) = [path for path in cache.iterdir() if not path.name.startswith(".")]
    assert (entry / MANIFEST).is_file() and backend.loaded == []  # built, so prepared

    with running_server(config) as running:
        assert ready_status(running.base_url) == (200, "ready")
    assert count_builds(backend.builds) == 1 and backend.loaded == [entry]


def serve_argv(model_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "serve", "--model", str(model_dir), "--backend", "compile", "--engine-cache", str(cache),
        "--port", "0", *extra,
    ]  # fmt: skip


def test_no_build_on_start_with_an_empty_cache_stops_naming_the_key_and_the_fix(
    demo_model_dir: Path, tmp_path: Path, backend: FileBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "engines"
    assert main(serve_argv(demo_model_dir, cache, "--no-build-on-start")) == 2
    error = capsys.readouterr().err
    key = re.search(r"for key ([0-9a-f]{64})", error)
    assert key is not None, error
    assert f"{cache / key.group(1)}" in error
    assert "r1-runtime build" in error and "spec.engine.buildOnStart" in error
    assert count_builds(backend.builds) == 0


def test_no_build_on_start_never_loads_a_corrupt_entry(
    demo_model_dir: Path, tmp_path: Path, backend: FileBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "engines"
    assert backend.gate is not None
    backend.gate.set()
    assert main(["build", *serve_argv(demo_model_dir, cache)[1:-2]]) == 0
    (entry,) = [path for path in cache.iterdir() if not path.name.startswith(".")]
    (entry / "engine.bin").write_bytes(b"torn")
    loaded = list(backend.loaded)  # the build loads what it built, as a check
    capsys.readouterr()
    assert main(serve_argv(demo_model_dir, cache, "--no-build-on-start")) == 2
    assert f"no cached compile engine for key {entry.name}" in capsys.readouterr().err
    assert backend.loaded == loaded


def test_eager_uses_no_engine_cache(demo_model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "engines"
    config = make_config(demo_model_dir, backend="eager", engine_cache=cache)
    built = build.build_engine(config, ModelInfo.read(demo_model_dir))
    assert built.cache_entry is None
    greedy = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    assert [len(output) for output in built.engine.generate([[5, 6, 7]], greedy)] == [4]
    assert not cache.exists()
    assert EngineStore(cache).clean_stale_temp() == []
