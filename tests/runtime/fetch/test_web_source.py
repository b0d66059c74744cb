"""An http(s) source: a directory with `r1-manifest.json`, served by a plain static web
server (the standard library's, which ignores Range requests and knows no tokens)."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from r1_runtime.fetch import FetchError, fetch, parse_source
from r1_runtime.fetch.manifest import write_manifest

from .conftest import FAST
from .test_hub_fetch import WEIGHTS, assert_same_files

TOKEN = "static-secret"


class Handler(SimpleHTTPRequestHandler):
    """Static files; with `token` set, only for `Authorization: Bearer <token>`."""

    token: str | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_error(401)
            return
        super().do_GET()


@pytest.fixture
def site(demo_model_dir: Path, tmp_path: Path) -> Path:
    """A web root holding the demo model under models/demo/ and its manifest."""
    directory = tmp_path / "www" / "models" / "demo"
    directory.mkdir(parents=True)
    for path in demo_model_dir.iterdir():
        (directory / path.name).symlink_to(path)
    write_manifest(directory)
    return tmp_path / "www"


def serve(root: Path, token: str | None = None) -> Iterator[str]:
    handler = type("Site", (Handler,), {"token": token})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def web(site: Path) -> Iterator[str]:
    yield from serve(site)


@pytest.fixture
def private_web(site: Path) -> Iterator[str]:
    yield from serve(site, token=TOKEN)


def fetch_web(spec: str, dest: Path, credentials: Path | None = None) -> str:
    source = parse_source(spec, revision=None, credentials_file=credentials, env={})
    out = io.StringIO()
    fetch(source, dest, out=out, options=FAST)
    return out.getvalue()


def test_the_manifest_lists_every_file_with_size_and_sha256(
    site: Path, demo_model_dir: Path
) -> None:
    files = json.loads((site / "models" / "demo" / "r1-manifest.json").read_text())["files"]
    assert [file["path"] for file in files] == sorted(p.name for p in demo_model_dir.iterdir())
    weights = next(file for file in files if file["path"] == WEIGHTS)
    data = (demo_model_dir / WEIGHTS).read_bytes()
    assert weights == {
        "path": WEIGHTS,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/models/demo/", id="a directory URL"),
        pytest.param("/models/demo/r1-manifest.json", id="the manifest's URL"),
    ],
)
def test_a_static_web_directory_is_fetched_and_then_a_no_op(
    path: str, web: str, demo_model_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "uri" / "abc"
    fetch_web(web + path, dest)
    assert_same_files(dest, demo_model_dir)
    assert "nothing to do" in fetch_web(web + path, dest)


def test_a_server_that_ignores_range_restarts_the_partial_file(
    web: str, site: Path, demo_model_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "abc"
    manifest = (site / "models" / "demo" / "r1-manifest.json").read_bytes()
    staging = tmp_path / ".abc.r1-fetch"
    staging.mkdir()
    (staging / ".r1-fetch-commit").write_text(hashlib.sha256(manifest).hexdigest())
    (staging / f"{WEIGHTS}.part").write_bytes((demo_model_dir / WEIGHTS).read_bytes()[:100_000])
    log = fetch_web(f"{web}/models/demo", dest)
    assert "the server ignores Range requests; from byte 0" in log
    assert_same_files(dest, demo_model_dir)


def test_a_private_server_takes_the_token_from_the_credentials_file(
    private_web: str, demo_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        FetchError, match=r"HTTP 401: the server wants credentials: set uri\.credentialsSecretRef"
    ):
        fetch_web(f"{private_web}/models/demo", tmp_path / "a")
    credentials = tmp_path / "credentials"
    credentials.write_text("wrong\n")
    with pytest.raises(FetchError, match=r"refused the token: check uri\.credentialsSecretRef"):
        fetch_web(f"{private_web}/models/demo", tmp_path / "a", credentials)
    credentials.write_text(f"{TOKEN}\n")
    fetch_web(f"{private_web}/models/demo", tmp_path / "a", credentials)
    assert_same_files(tmp_path / "a", demo_model_dir)


def test_a_directory_without_a_manifest_says_how_to_write_one(web: str, tmp_path: Path) -> None:
    with pytest.raises(
        FetchError, match=r"HTTP 404.*no manifest at .*python -m r1_runtime\.fetch\.manifest"
    ):
        fetch_web(f"{web}/models/", tmp_path / "a")
