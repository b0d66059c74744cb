"""Streaming digests of a file as the sources state them: sha256 (LFS files, manifests,
OCI blobs), the git blob sha1 (`sha1(b"blob <size>\\0" + content)`, small hub files) and
md5 (an S3 single-part object's ETag)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from r1_runtime.fetch.listing import RemoteFile

CHUNK_BYTES = 1 << 20


class Digests:
    """The digests `file` is checked against, fed chunk by chunk."""

    def __init__(self, file: RemoteFile) -> None:
        self._file = file
        self._sha256 = hashlib.sha256() if file.sha256 else None
        self._git = hashlib.sha1(f"blob {file.size}\0".encode()) if file.git_sha1 else None
        self._md5 = hashlib.md5(usedforsecurity=False) if file.md5 else None

    def update(self, chunk: bytes | memoryview) -> None:
        if self._sha256:
            self._sha256.update(chunk)
        if self._git:
            self._git.update(chunk)
        if self._md5:
            self._md5.update(chunk)

    def update_from(self, path: Path, num_bytes: int) -> None:
        """Feed the first `num_bytes` of `path` (a partial download being resumed)."""
        with path.open("rb") as stream:
            while num_bytes > 0:
                chunk = stream.read(min(CHUNK_BYTES, num_bytes))
                if not chunk:
                    raise OSError(f"{path} is shorter than {num_bytes} bytes")
                self.update(chunk)
                num_bytes -= len(chunk)

    def mismatch(self) -> str | None:
        """None when every expected digest matches, else what differs."""
        if self._sha256 and self._sha256.hexdigest() != self._file.sha256:
            return f"sha256 {self._sha256.hexdigest()}, expected {self._file.sha256}"
        if self._git and self._git.hexdigest() != self._file.git_sha1:
            return f"git blob sha1 {self._git.hexdigest()}, expected {self._file.git_sha1}"
        if self._md5 and self._md5.hexdigest() != self._file.md5:
            return f"md5 {self._md5.hexdigest()}, expected {self._file.md5}"
        return None


def mismatch_of(path: Path, file: RemoteFile) -> str | None:
    """None when `path` holds exactly `file` (size and digests), else what differs."""
    size = path.stat().st_size
    if size != file.size:
        return f"{size} bytes, expected {file.size}"
    digests = Digests(file)
    digests.update_from(path, size)
    return digests.mismatch()
