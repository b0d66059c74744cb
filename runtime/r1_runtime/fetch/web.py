"""http(s) source: a directory any static web server serves, holding the weights and an
`r1-manifest.json` that lists every file with its size and sha256 (docs/fetch.md).
`python -m r1_runtime.fetch.manifest DIR` writes that manifest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from r1_runtime.fetch.errors import FetchError
from r1_runtime.fetch.http import HttpClient
from r1_runtime.fetch.listing import Listing, RemoteFile, checked_file

MANIFEST_NAME = "r1-manifest.json"
CREDENTIALS_HINT = (
    "uri.credentialsSecretRef, a bearer token the fetcher reads from --credentials-file"
)


@dataclass(frozen=True, kw_only=True)
class WebSource:
    """`spec` is the --source as written: a directory URL (the manifest is
    `<directory>/r1-manifest.json`) or the URL of a manifest ending in `.json` (files are
    relative to it)."""

    spec: str
    token: str | None = None
    revision: None = None

    @property
    def manifest_url(self) -> str:
        if urlsplit(self.spec).path.endswith(".json"):
            return self.spec
        return urljoin(self.spec.rstrip("/") + "/", MANIFEST_NAME)

    def client(self) -> HttpClient:
        return HttpClient(
            token=self.token, auth_host=urlsplit(self.spec).netloc, explain=self.explain
        )

    def list(self, client: HttpClient) -> Listing:
        """The manifest's files; its sha256 pins the listing as a commit would."""
        return parse_manifest(client.get_bytes(self.manifest_url), self.manifest_url)

    def file_url(self, commit: str, file: RemoteFile) -> str:
        return urljoin(self.manifest_url, quote(file.path))

    def explain(self, status: int, url: str, error_code: str) -> str:
        if status in (401, 403) and self.token:
            return f"the server refused the token: check {CREDENTIALS_HINT}"
        if status in (401, 403):
            return f"the server wants credentials: set {CREDENTIALS_HINT}"
        if status == 404 and url == self.manifest_url:
            return (
                f"no manifest at {url}: an http(s) source is a directory holding "
                f"{MANIFEST_NAME} (write it with `python -m r1_runtime.fetch.manifest DIR`)"
            )
        if status == 404:
            return f"{url} is listed in the manifest but not served"
        return f"GET {url} failed"


def parse_manifest(data: bytes, where: str) -> Listing:
    """The files an `r1-manifest.json` (read from `where`) lists, each with a sha256; the
    manifest's own sha256 pins the listing as a commit would."""
    try:
        files = json.loads(data)["files"]
        listing = tuple(checked_file(RemoteFile.from_json(file)) for file in files)
    except (ValueError, KeyError, TypeError) as error:
        raise FetchError(
            f"{where} is not an r1 manifest ({error!r}): expected "
            '{"files": [{"path", "size", "sha256"}, ...]}, see docs/fetch.md'
        ) from None
    if any(not file.sha256 for file in listing):
        raise FetchError(f"{where}: every file needs a sha256")
    return Listing(commit=hashlib.sha256(data).hexdigest(), files=listing)
