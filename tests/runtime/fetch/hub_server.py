"""A loopback server that answers like the Hugging Face hub for one repository, with a
request log and injectable faults (a dropped connection, a stall until released).

The endpoints the fetcher calls, as the hub answers them:
- `GET /api/models/{repo}/revision/{rev}?blobs=True`: `sha` and `siblings` (rfilename,
  blobId, size, and `lfs` {sha256, size, pointerSize} for LFS files);
- `GET /{repo}/resolve/{rev}/{path}`: small files directly (ETag: git blob sha1,
  X-Repo-Commit); LFS files as a 302 to `/lfs/{sha256}` on `cdn_host` (the hub's CDN),
  with X-Linked-Etag and X-Linked-Size;
- 401 for a wrong or missing token when one is required, 404 with X-Error-Code
  RepoNotFound / RevisionNotFound / EntryNotFound; `Range: bytes=N-` answers 206.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None
    authorization: str | None


@dataclass
class Faults:
    """`drop_after[path] = n`: the first answer for `path` stops after n body bytes and
    closes the connection. `stall_after[path] = n`: the first answer sends n bytes, sets
    `stalled`, waits for `release` (the test may kill the client meanwhile), then sends
    the rest."""

    drop_after: dict[str, int] = field(default_factory=dict)
    stall_after: dict[str, int] = field(default_factory=dict)
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    bytes_per_second: float | None = None
    not_served: set[str] = field(default_factory=set)  # listed, but resolve answers 404
    corrupt: set[str] = field(default_factory=set)  # served with a byte flipped


class HubServer:
    """Serves `directory` as `repo` at revision `main` (and its commit) on 127.0.0.1."""

    def __init__(self, directory: Path, repo: str = "org/demo", token: str | None = None) -> None:
        self.repo = repo
        self.token = token
        self.files = {
            path.relative_to(directory).as_posix(): path.read_bytes()
            for path in sorted(directory.rglob("*"))
            if path.is_file()
        }
        self.requests: list[Request] = []
        self.faults = Faults()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def cdn(self) -> str:
        """The same server under another host name: the token must not travel there."""
        return f"http://localhost:{self._server.server_address[1]}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.faults.release.set()
        self._server.shutdown()
        self._server.server_close()

    def file_requests(self, path: str) -> list[Request]:
        """Requests that fetched `path`'s bytes (the LFS redirect target or small file)."""
        sha256 = hashlib.sha256(self.files[path]).hexdigest()
        wanted = {f"/lfs/{sha256}"} if is_lfs(path) else {f"/{self.repo}/resolve/{COMMIT}/{path}"}
        with self._lock:
            return [request for request in self.requests if request.path in wanted]

    def byte_requests(self) -> list[Request]:
        """Every request that downloaded file bytes."""
        return [request for path in self.files for request in self.file_requests(path)]

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def siblings(self) -> list[dict[str, Any]]:
        return [_sibling(path, data) for path, data in self.files.items()]


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def _pointer(data: bytes) -> bytes:
    sha256 = hashlib.sha256(data).hexdigest()
    lines = [
        "version https://git-lfs.github.com/spec/v1",
        f"oid sha256:{sha256}",
        f"size {len(data)}",
    ]
    return ("\n".join(lines) + "\n").encode()


def _sibling(path: str, data: bytes) -> dict[str, Any]:
    if not is_lfs(path):
        return {"rfilename": path, "blobId": git_blob_sha1(data), "size": len(data)}
    pointer = _pointer(data)
    lfs = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "pointerSize": len(pointer),
    }
    return {"rfilename": path, "blobId": git_blob_sha1(pointer), "size": len(pointer), "lfs": lfs}


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            auth = self.headers.get("Authorization")
            hub.log(Request(path, self.headers.get("Range"), auth))
            if path.startswith("/lfs/"):
                return self._lfs(path.removeprefix("/lfs/"))
            if hub.token and auth != f"Bearer {hub.token}":
                return self._error(401, "", "Invalid credentials in Authorization header")
            api = f"/api/models/{hub.repo}/revision/"
            if path.startswith(api):
                return self._revision(path.removeprefix(api))
            resolve = f"/{hub.repo}/resolve/"
            if path.startswith(resolve):
                revision, _, name = path.removeprefix(resolve).partition("/")
                return self._resolve(revision, name)
            self._error(404, "RepoNotFound", "Repository not found")

        def _revision(self, revision: str) -> None:
            if revision not in ("main", COMMIT):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            body = json.dumps({"id": hub.repo, "sha": COMMIT, "siblings": hub.siblings()})
            self._send(200, body.encode(), {"Content-Type": "application/json"})

        def _resolve(self, revision: str, name: str) -> None:
            if revision not in ("main", COMMIT):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            if name not in hub.files or name in hub.faults.not_served:
                return self._error(404, "EntryNotFound", f"{name} does not exist")
            data = hub.files[name]
            headers = {"X-Repo-Commit": COMMIT}
            if not is_lfs(name):
                return self._body(name, data, headers | {"ETag": f'"{git_blob_sha1(data)}"'})
            sha256 = hashlib.sha256(data).hexdigest()
            headers |= {"Location": f"{hub.cdn}/lfs/{sha256}", "X-Linked-Etag": f'"{sha256}"'}
            self._send(302, b"", headers | {"X-Linked-Size": str(len(data))})

        def _lfs(self, sha256: str) -> None:
            for name, data in hub.files.items():
                if hashlib.sha256(data).hexdigest() == sha256:
                    return self._body(name, data, {"ETag": f'"{sha256}"'})
            self._error(404, "EntryNotFound", "no such object")

        def _body(self, name: str, data: bytes, headers: dict[str, str]) -> None:
            start = 0
            spec = self.headers.get("Range", "")
            if spec.startswith("bytes=") and spec.endswith("-"):
                start = int(spec.removeprefix("bytes=").removesuffix("-"))
                if start >= len(data):
                    return self._error(416, "", "Range Not Satisfiable")
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            if name in hub.faults.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            status = 206 if spec else 200
            self.send_response(status)
            for key, value in (headers | {"Content-Length": str(len(data) - start)}).items():
                self.send_header(key, value)
            self.end_headers()
            self._stream(name, data[start:])

        def _stream(self, name: str, body: bytes) -> None:
            faults = hub.faults
            drop = faults.drop_after.pop(name, None)
            stall = faults.stall_after.pop(name, None)
            try:
                if stall is not None:
                    self._write(body[:stall])
                    faults.stalled.set()
                    faults.release.wait(timeout=30)
                    body = body[stall:]
                self._write(body if drop is None else body[:drop])
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client was killed
            if drop is not None:
                self.close_connection = True

        def _write(self, data: bytes) -> None:
            step = 1 << 16
            for offset in range(0, len(data), step):
                self.wfile.write(data[offset : offset + step])
                if hub.faults.bytes_per_second:
                    threading.Event().wait(step / hub.faults.bytes_per_second)
            self.wfile.flush()

        def _error(self, status: int, code: str, message: str) -> None:
            headers = {"X-Error-Message": message} | ({"X-Error-Code": code} if code else {})
            self._send(status, json.dumps({"error": message}).encode(), headers)

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
