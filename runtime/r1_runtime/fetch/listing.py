"""What a source holds: the files of one model revision with their sizes and digests."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from r1_runtime.fetch.errors import FetchError


@dataclass(frozen=True, kw_only=True)
class RemoteFile:
    """One file of the model. At least one digest is known, so every byte is verified:
    `sha256` (Hugging Face LFS files, http manifests, OCI blobs, S3 objects uploaded with a
    SHA-256 checksum), `git_sha1` (the git blob id of a small file on the hub) or `md5`
    (the ETag of an S3 object uploaded in one part). An object store's multipart object
    without any of them carries only its `etag`: then the size alone is verified."""

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None
    md5: str | None = None
    etag: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "gitSha1": self.git_sha1,
            "md5": self.md5,
            "etag": self.etag,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RemoteFile:
        return cls(
            path=checked_path(data["path"]),
            size=int(data["size"]),
            sha256=data.get("sha256"),
            git_sha1=data.get("gitSha1"),
            md5=data.get("md5"),
            etag=data.get("etag"),
        )


@dataclass(frozen=True, kw_only=True)
class Listing:
    """The files of one revision. `commit` pins it: the hub's commit sha (every file is
    downloaded from that commit even if the branch moves meanwhile) or the sha256 of an
    http manifest."""

    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def num_bytes(self) -> int:
        return sum(file.size for file in self.files)


def checked_path(path: object) -> str:
    """A listed path made safe to join under --dest: relative, no `..`, no empty parts.

    A hostile or broken listing must never write outside the destination directory.
    """
    if not isinstance(path, str) or not path:
        raise FetchError(f"the source lists a file without a path: {path!r}")
    normal = posixpath.normpath(path)
    if normal != path or normal.startswith(("/", "../")) or normal in (".", ".."):
        raise FetchError(f"the source lists an unsafe path {path!r}: paths must be relative")
    if "\\" in path or "\0" in path:
        raise FetchError(f"the source lists an unsafe path {path!r}")
    return path


def checked_file(file: RemoteFile) -> RemoteFile:
    """`file` if it has a size and a digest (or an object store's ETag) to verify it
    against, else a FetchError."""
    if file.size < 0:
        raise FetchError(f"the source lists {file.path} with a negative size")
    if not (file.sha256 or file.git_sha1 or file.md5 or file.etag):
        raise FetchError(f"the source lists {file.path} without a digest to verify it")
    return file
