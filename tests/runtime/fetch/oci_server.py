"""A loopback OCI registry (distribution spec) holding ORAS-style model artifacts:

- `GET /v2/{repo}/manifests/{tag or digest}`: the manifest (or an image index), with
  Content-Type and Docker-Content-Digest; 404 MANIFEST_UNKNOWN / NAME_UNKNOWN as JSON
  `{"errors": [...]}`;
- `GET /v2/{repo}/blobs/{digest}`: a 307 to `/cdn/{digest}` on another host name (as
  registries send blobs to object storage), which answers `Range: bytes=N-` with 206;
- auth `token` (default): a 401 with `WWW-Authenticate: Bearer realm=.../token,
  service=..., scope=...` until a token from `/token` is sent; `/token` wants Basic
  credentials when `users` is set; each token is good for `token_uses` requests (None:
  forever). Auth `basic`: a 401 `WWW-Authenticate: Basic` until the user and password come.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .loopback import Handler, LoopbackServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_CONFIG = b"{}"


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass
class Repository:
    manifests: dict[str, bytes] = field(default_factory=dict)  # by digest
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest


class Registry(LoopbackServer):
    def __init__(
        self,
        *,
        auth: str = "token",
        users: dict[str, str] | None = None,
        token_uses: int | None = None,
    ) -> None:
        super().__init__(RegistryHandler)
        self.auth = auth
        self.users = users or {}
        self.token_uses = token_uses
        self.repositories: dict[str, Repository] = {}
        self.blobs: dict[str, tuple[str, bytes]] = {}  # digest -> (name for faults, bytes)
        self.tokens: dict[str, int | None] = {}  # token -> uses left
        self.issued = 0
        self._token_lock = threading.Lock()

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.port}"

    def push(
        self,
        repository: str,
        tag: str,
        files: dict[str, bytes],
        annotations: dict[str, dict[str, str]] | None = None,
    ) -> str:
        """Push `files` as an ORAS artifact (one layer per file, titled); its digest."""
        layers = []
        for name, data in files.items():
            self.blobs[digest_of(data)] = (name, data)
            title = {"org.opencontainers.image.title": name}
            layers.append(
                {
                    "mediaType": "application/octet-stream",
                    "digest": digest_of(data),
                    "size": len(data),
                    "annotations": title | (annotations or {}).get(name, {}),
                }
            )
        self.blobs[digest_of(EMPTY_CONFIG)] = ("config", EMPTY_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.r1.model",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": digest_of(EMPTY_CONFIG),
                "size": len(EMPTY_CONFIG),
            },
            "layers": layers,
        }
        return self.put_manifest(repository, tag, manifest)

    def put_manifest(self, repository: str, tag: str, manifest: dict[str, Any]) -> str:
        data = json.dumps(manifest, indent=2).encode()
        repo = self.repositories.setdefault(repository, Repository())
        repo.manifests[digest_of(data)] = data
        repo.tags[tag] = digest_of(data)
        return digest_of(data)

    def issue_token(self) -> str:
        with self._token_lock:
            self.issued += 1
            token = f"token-{self.issued}"
            self.tokens[token] = self.token_uses
            return token

    def use_token(self, token: str) -> bool:
        with self._token_lock:
            if token not in self.tokens:
                return False
            left = self.tokens[token]
            if left is not None:
                if left <= 0:
                    return False
                self.tokens[token] = left - 1
            return True

    def cdn_gets(self, data: bytes) -> list[str | None]:
        """The Range header of each download of the blob holding `data`."""
        path = f"/cdn/{digest_of(data)}"
        return [r.range for r in self.requests if r.path == path]


class RegistryHandler(Handler):
    server_state: Registry

    def do_GET(self) -> None:
        self.record()
        url = urlsplit(self.path)
        if url.path == "/token":
            return self._token(parse_qs(url.query))
        if url.path.startswith("/cdn/"):
            return self._cdn(url.path.removeprefix("/cdn/"))
        if not url.path.startswith("/v2/"):
            return self._errors(404, "NOT_FOUND", "not found")
        if not self._authorized():
            return
        repository, kind, reference = _split(url.path.removeprefix("/v2/"))
        repo = self.server_state.repositories.get(repository)
        if repo is None:
            return self._errors(404, "NAME_UNKNOWN", "repository name not known to registry")
        if kind == "blobs":
            if reference not in self.server_state.blobs:
                return self._errors(404, "BLOB_UNKNOWN", "blob unknown to registry")
            cdn = f"http://localhost:{self.server_state.port}/cdn/{reference}"
            return self.send(307, b"", {"Location": cdn})
        digest = repo.tags.get(reference, reference)
        if kind != "manifests" or digest not in repo.manifests:
            return self._errors(404, "MANIFEST_UNKNOWN", "manifest unknown")
        data = repo.manifests[digest]
        content_type = json.loads(data).get("mediaType", OCI_MANIFEST)
        self.send(200, data, {"Content-Type": content_type, "Docker-Content-Digest": digest})

    def _authorized(self) -> bool:
        state = self.server_state
        given = self.headers.get("Authorization", "")
        if state.auth == "basic":
            if self._basic_user_ok(given):
                return True
            self._errors(401, "UNAUTHORIZED", "authentication required", 'Basic realm="loopback"')
            return False
        scheme, _, token = given.partition(" ")
        if scheme == "Bearer" and state.use_token(token):
            return True
        repository = _split(urlsplit(self.path).path.removeprefix("/v2/"))[0]
        challenge = (
            f'Bearer realm="{state.endpoint}/token",service="loopback-registry",'
            f'scope="repository:{repository}:pull"'
        )
        self._errors(401, "UNAUTHORIZED", "authentication required", challenge)
        return False

    def _token(self, query: dict[str, list[str]]) -> None:
        state = self.server_state
        if state.users and not self._basic_user_ok(self.headers.get("Authorization", "")):
            return self._errors(401, "UNAUTHORIZED", "invalid username or password")
        assert query.get("service") == ["loopback-registry"], query
        body = json.dumps({"token": state.issue_token(), "expires_in": 300}).encode()
        self.send(200, body, {"Content-Type": "application/json"})

    def _basic_user_ok(self, given: str) -> bool:
        scheme, _, encoded = given.partition(" ")
        if scheme != "Basic":
            return False
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        return bool(self.server_state.users) and self.server_state.users.get(user) == password

    def _cdn(self, digest: str) -> None:
        if self.headers.get("Authorization"):
            return self.send(400, b"only one auth mechanism allowed", {})  # as S3 answers
        if digest not in self.server_state.blobs:
            return self.send(404, b"", {})
        name, data = self.server_state.blobs[digest]
        self.send_object(name, data, {"Content-Type": "application/octet-stream"})

    def _errors(self, status: int, code: str, message: str, challenge: str | None = None) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        headers = {"Content-Type": "application/json"}
        self.send(status, body, headers | ({"WWW-Authenticate": challenge} if challenge else {}))


def _split(path: str) -> tuple[str, str, str]:
    """`models/demo/manifests/v1` -> (`models/demo`, `manifests`, `v1`)."""
    for kind in ("manifests", "blobs"):
        repository, found, reference = path.rpartition(f"/{kind}/")
        if found:
            return repository, kind, reference
    return path, "", ""
