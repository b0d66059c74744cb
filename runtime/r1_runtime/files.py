"""File operations the runtime's parts share: whole-file digests, writes that survive a crash
(fsync, then rename, then fsync of the directory), and JSON objects read with a clear error."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

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


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; a `ValueError` starting with the path says why not."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read a JSON object: {error}") from error
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return raw
