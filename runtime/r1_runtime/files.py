"""File operations the fetch and the engine cache share: whole-file digests and writes that
survive a crash (fsync, then rename, then fsync of the directory)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK_BYTES = 8 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: readers see the old content or the whole new one."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make renames and creations in `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # NOTE: some filesystems (and NFS clients) refuse fsync on a directory
    finally:
        os.close(descriptor)
