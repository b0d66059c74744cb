"""Content digests of a checkpoint's files, for the cache key.

Small files (config, tokenizer, chat template) are hashed in full on every start: they are
what most often changes. Large files (weights) would take minutes to hash, so their sha256
comes from `r1-runtime fetch`'s completion marker when it lists the file at its current
size, else it is computed once and memoized on the warm tier by (path, size, mtime_ns).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1_runtime.files import sha256_file

logger = logging.getLogger(__name__)

FETCH_MARKER = ".r1-fetch-complete.json"  # written last by `r1-runtime fetch`
LARGE_FILE_BYTES = 16 << 20


class DigestMemo:
    """sha256 of large files, remembered in a small JSON file keyed by (real path, size,
    mtime_ns): a file that changes in place gets a new stat and is hashed again.

    NOTE: concurrent writers each replace the whole file atomically; the last one wins and
    entries another writer added may be lost, which only costs hashing them again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries = self._read()
        self._is_dirty = False

    def digest(self, path: Path) -> str:
        real = os.path.realpath(path)
        stat = os.stat(real)
        stamp = {"size": stat.st_size, "mtimeNs": stat.st_mtime_ns}
        entry = self._entries.get(real)
        if entry is not None and {k: entry.get(k) for k in stamp} == stamp:
            return str(entry["sha256"])
        started = time.monotonic()
        sha256 = sha256_file(Path(real))
        logger.info(
            "hashed %s (%.1f GB) in %.1f s", path, stat.st_size / 1e9, time.monotonic() - started
        )
        self._entries[real] = {**stamp, "sha256": sha256}
        self._is_dirty = True
        return sha256

    def save(self) -> None:
        """Write the memo if it changed; a read-only or full volume only logs a warning."""
        if not self._is_dirty:
            return
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps({"version": 1, "entries": self._entries}))
            os.replace(temporary, self.path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            logger.warning("cannot save the digest memo %s: %s", self.path, error)
        self._is_dirty = False

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(self.path.read_text())
            entries = raw["entries"] if raw.get("version") == 1 else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}
        return {key: value for key, value in entries.items() if isinstance(value, dict)}


def model_file_digests(
    model_dir: Path, memo: DigestMemo | None = None, *, large_file_bytes: int = LARGE_FILE_BYTES
) -> list[dict[str, Any]]:
    """`{"path", "size", "sha256"}` for every file under `model_dir`, sorted by path.

    Hidden files and directories (the fetch marker, `.cache/`, lock files) are not part of
    the model. Large files take their digest from the fetch marker, else from `memo`."""
    fetched = fetch_marker_digests(model_dir)
    files = []
    for relative in _model_paths(model_dir):
        path = model_dir / relative
        stat = path.stat()
        verified = fetched.get(relative)
        if stat.st_size < large_file_bytes:
            sha256 = sha256_file(path)
        elif verified is not None and verified.matches(stat):
            sha256 = verified.sha256
        else:
            sha256 = memo.digest(path) if memo is not None else sha256_file(path)
        files.append({"path": relative, "size": stat.st_size, "sha256": sha256})
    if memo is not None:
        memo.save()
    return files


@dataclass(frozen=True)
class FetchedFile:
    """A file as `r1-runtime fetch` verified it."""

    size: int
    mtime_ns: int | None
    sha256: str

    def matches(self, stat: os.stat_result) -> bool:
        """Whether the file on disk is still the one fetch verified (same size and, when
        the marker recorded it, same mtime)."""
        same_time = self.mtime_ns is None or self.mtime_ns == stat.st_mtime_ns
        return self.size == stat.st_size and same_time


def fetch_marker_digests(model_dir: Path) -> dict[str, FetchedFile]:
    """`path -> FetchedFile` from the fetch completion marker's `files` list (`path`,
    `size`, `sha256`, `mtimeNs`). Empty when there is no marker or it cannot be read; files
    it lists without a sha256 (small files verified by git blob id) are left out."""
    try:
        listed = json.loads((model_dir / FETCH_MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    fetched = {}
    for file in listed if isinstance(listed, list) else []:
        if not isinstance(file, dict):
            continue
        path, size, sha256 = file.get("path"), file.get("size"), file.get("sha256")
        mtime_ns = file.get("mtimeNs")
        if isinstance(path, str) and isinstance(size, int) and isinstance(sha256, str):
            fetched[path] = FetchedFile(
                size, mtime_ns if isinstance(mtime_ns, int) else None, sha256
            )
    return fetched


def _model_paths(model_dir: Path) -> list[str]:
    paths = []
    for directory, subdirectories, names in os.walk(model_dir):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        for name in names:
            path = Path(directory) / name
            if not name.startswith(".") and path.is_file():
                paths.append(path.relative_to(model_dir).as_posix())
    return sorted(paths)
