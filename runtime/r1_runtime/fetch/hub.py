"""Hugging Face hub source (`hf://<org>/<repo>` at a revision): the files and digests from
the hub's API, each file from `/{repo}/resolve/{commit}/{path}`. Any endpoint speaking that
API works (HF_ENDPOINT: a private mirror, or a test server on loopback)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from r1_runtime.fetch.errors import FetchError
from r1_runtime.fetch.http import HttpClient
from r1_runtime.fetch.listing import Listing, RemoteFile, checked_file, checked_path

DEFAULT_ENDPOINT = "https://huggingface.co"
TOKEN_HINT = "the fetcher reads HF_TOKEN, set from the Secret in huggingFace.tokenSecretRef"


@dataclass(frozen=True, kw_only=True)
class HubSource:
    """A repository at a revision (branch, tag or commit) on `endpoint`."""

    repo: str
    revision: str
    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = None

    @property
    def spec(self) -> str:
        return f"hf://{self.repo}"

    def client(self) -> HttpClient:
        return HttpClient(
            token=self.token, auth_host=urlsplit(self.endpoint).netloc, explain=self.explain
        )

    def list(self, client: HttpClient) -> Listing:
        """The revision's commit and files, each with its size and sha256 (LFS files) or
        git blob sha1 (small files)."""
        revision = quote(self.revision, safe="")
        info = client.get_json(
            f"{self.endpoint}/api/models/{self.repo}/revision/{revision}?blobs=True"
        )
        if not isinstance(info, dict) or not isinstance(info.get("siblings"), list):
            raise FetchError(
                f"{self.endpoint} answered no file list for {self.repo}; is HF_ENDPOINT a hub?"
            )
        files = tuple(checked_file(_remote_file(sibling)) for sibling in info["siblings"])
        return Listing(commit=str(info.get("sha") or self.revision), files=files)

    def file_url(self, commit: str, file: RemoteFile) -> str:
        return f"{self.endpoint}/{self.repo}/resolve/{quote(commit, safe='')}/{quote(file.path)}"

    def explain(self, status: int, url: str, error_code: str) -> str:
        """What to fix for an HTTP error status, naming the setting to change."""
        if status == 401 and self.token:
            return (
                f"{self.endpoint} rejected HF_TOKEN for {self.repo}: check the token ({TOKEN_HINT})"
            )
        if status == 401:
            return (
                f"{self.repo} needs a token (private or gated) or does not exist on "
                f"{self.endpoint}: no HF_TOKEN is set ({TOKEN_HINT})"
            )
        if status == 403:
            who = "HF_TOKEN has" if self.token else "no HF_TOKEN is set, so the fetcher has"
            return (
                f"{who} no access to {self.repo}: for a gated model accept its terms on the "
                f"hub with the token's account ({TOKEN_HINT})"
            )
        if status == 404 and error_code == "RevisionNotFound":
            return (
                f"revision {self.revision!r} not found in {self.repo}: "
                "check --revision (huggingFace.revision)"
            )
        if status == 404 and "/resolve/" in url:
            return f"{url} is listed by the hub API but not served: check the mirror at HF_ENDPOINT"
        if status == 404:
            return (
                f"{self.repo} at revision {self.revision!r} not found on {self.endpoint}: "
                f"check huggingFace.repo and huggingFace.revision (and HF_ENDPOINT for a mirror)"
            )
        return f"GET {url} failed"


def _remote_file(sibling: Any) -> RemoteFile:
    if not isinstance(sibling, dict):
        raise FetchError(f"the hub listed a file as {sibling!r}")
    path = checked_path(sibling.get("rfilename"))
    lfs = sibling.get("lfs")
    if isinstance(lfs, dict):
        return RemoteFile(path=path, size=int(lfs.get("size", -1)), sha256=lfs.get("sha256"))
    if "size" not in sibling:
        raise FetchError(f"the hub listed {path} without its size: it must honour ?blobs=True")
    return RemoteFile(path=path, size=int(sibling["size"]), git_sha1=sibling.get("blobId"))
