"""What the loopback object store and registry share: a threaded server on 127.0.0.1 with
a request log, and object bodies that answer `Range: bytes=N-` with injectable faults."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    host: str
    path: str  # as sent, still percent-encoded, with the query
    range: str | None
    authorization: str | None


@dataclass
class Faults:
    """`drop_after[name] = n`: the next answer for `name` ends after n body bytes and
    closes the connection. `corrupt[name] = k`: the next k answers flip a byte."""

    drop_after: dict[str, int] = field(default_factory=dict)
    corrupt: dict[str, int] = field(default_factory=dict)


def model_files(directory: Path) -> dict[str, bytes]:
    """A small model (random weights in two shards, a file in a subdirectory whose name
    needs URL encoding), written under `directory`; path -> bytes."""
    files = {
        "config.json": b'{"model_type": "qwen2", "hidden_size": 64}\n',
        "model-00001-of-00002.safetensors": os.urandom(1_500_000),
        "model-00002-of-00002.safetensors": os.urandom(700_000),
        "tokenizer.json": b'{"version": "1.0"}' * 50,
        "extra/notes v1+final.txt": b"a file whose name needs encoding\n",
    }
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return files


class LoopbackServer:
    """Runs `handler` on 127.0.0.1; `requests` logs what arrived, in order."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.requests: list[Request] = []
        self.faults = Faults()
        self._lock = threading.Lock()
        handler_class = type("Bound", (handler,), {"server_state": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def take_fault(self, faults: dict[str, int], name: str) -> int | None:
        """The fault set for `name`, used up (a count drops by one)."""
        with self._lock:
            value = faults.get(name)
            if value is not None and faults is self.faults.corrupt:
                faults[name] -= 1
                if not faults[name]:
                    del faults[name]
            elif value is not None:
                del faults[name]
            return value


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: LoopbackServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def record(self) -> None:
        headers = self.headers
        self.server_state.log(
            Request(
                self.command,
                headers.get("Host", ""),
                self.path,
                headers.get("Range"),
                headers.get("Authorization"),
            )
        )

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_object(self, name: str, data: bytes, headers: dict[str, str]) -> None:
        """`data` whole (200) or from `Range: bytes=N-` (206), with the faults for `name`."""
        state = self.server_state
        start, spec = 0, self.headers.get("Range", "")
        if spec.startswith("bytes=") and spec.endswith("-"):
            start = int(spec.removeprefix("bytes=").removesuffix("-"))
            if start >= len(data):
                return self.send(416, b"", {})
            headers = headers | {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        if self.command == "GET" and state.take_fault(state.faults.corrupt, name):
            data = bytes([data[0] ^ 0xFF]) + data[1:] if start == 0 else data[:-1] + b"\0"
        self.send_response(206 if start else 200)
        for key, value in (headers | {"Content-Length": str(len(data) - start)}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        drop = state.take_fault(state.faults.drop_after, name)
        body = data[start:] if drop is None else data[start : start + drop]
        try:
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        if drop is not None:
            self.close_connection = True
