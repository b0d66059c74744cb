"""The engine cache on the warm tier (`--engine-cache`, `/cache/engines` in a pod).

Layout under the root:
    <key>/                       published entries: complete, never modified, `manifest.json`
    .locks/<key>.lock            the build lock of each key (see `r1_runtime.file_lock`)
    .tmp/<key>.<pid>.<random>/   entries being built; leftovers of crashed builders
    .digests.json                memo of weight file digests (see `digests.py`)

Readers take no lock: an entry appears whole, by one `rename` of a complete directory, and
is only ever removed when it fails validation. A builder holds the key's lock from its
second lookup until the rename, so each key is built once however many pods start at once.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1_runtime.engine_cache.manifest import (
    CorruptEntryError,
    Manifest,
    read_manifest,
    write_manifest,
)
from r1_runtime.file_lock import FileLock, try_lock
from r1_runtime.files import fsync_directory

logger = logging.getLogger(__name__)

KEY = re.compile(r"[0-9a-f]{64}")
Builder = Callable[[Path], None]  # fills an empty directory with an engine's artifacts


@dataclass(frozen=True)
class Resolved:
    """The entry for a key, found or just built."""

    key: str
    entry: Path
    manifest: Manifest
    is_built: bool  # True: this call built it
    lock_wait_s: float = 0.0  # time spent waiting for another builder


class EngineStore:
    def __init__(self, root: Path, *, poll_s: float = 0.5) -> None:
        self.root = root
        self.poll_s = poll_s

    def entry(self, key: str) -> Path:
        if not KEY.fullmatch(key):
            raise ValueError(f"not an engine cache key (64 hex digits): {key!r}")
        return self.root / key

    def lock_path(self, key: str) -> Path:
        return self.root / ".locks" / f"{key}.lock"

    @property
    def temp_root(self) -> Path:
        return self.root / ".tmp"

    @property
    def digest_memo_path(self) -> Path:
        return self.root / ".digests.json"

    def lookup(self, key: str) -> Manifest | None:
        """The manifest of the valid entry for `key`, else None (absent, partial or corrupt:
        a corrupt one is logged and left for the next builder to replace). Takes no lock."""
        entry = self.entry(key)
        if not entry.exists():
            return None
        try:
            return read_manifest(entry, key)
        except CorruptEntryError as error:
            logger.warning("engine cache entry not usable, it will be rebuilt: %s", error)
            return None

    def get_or_build(self, key: str, inputs: dict[str, Any], build: Builder) -> Resolved:
        """The entry for `key`: found, built by another pod while this one waited for the
        lock, or built here by `build(directory)` and published. Raises what `build` raises,
        leaving no entry and no temporary directory behind."""
        found = self.lookup(key)
        if found is not None:
            return Resolved(key, self.entry(key), found, is_built=False)
        lock_path = self.lock_path(key)

        def waiting(holder: str) -> None:
            logger.info("waiting for the build lock %s, held by %s", lock_path, holder)

        with FileLock(lock_path, waiting, poll_s=self.poll_s) as lock:
            found = self.lookup(key)
            if found is not None:
                return Resolved(key, self.entry(key), found, False, lock.waited_s)
            self._discard(key)
            manifest, is_built = self._build(key, inputs, build)
            return Resolved(key, self.entry(key), manifest, is_built, lock.waited_s)

    def clean_stale_temp(self) -> list[Path]:
        """Remove temporary directories whose key nobody is building now (their builder
        died). Never waits for a lock. Returns what it removed."""
        removed = []
        for path in self._temp_dirs():
            try:
                locked = try_lock(self.lock_path(path.name[:64]))
            except OSError as error:  # NOTE: e.g. a cache mounted read-only: nothing to clean
                logger.warning("cannot clean %s: %s", path, error)
                continue
            if locked is None:
                continue  # a live builder of that key: maybe this is its directory
            try:
                if path.exists():
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
            finally:
                locked.close()
        return removed

    def _build(self, key: str, inputs: dict[str, Any], build: Builder) -> tuple[Manifest, bool]:
        """Build and publish; `(manifest, True)`, or the entry another builder published
        first and `False` (possible only where the lock is not shared: `r1_runtime.file_lock`)."""
        temporary = self.temp_root / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        temporary.mkdir(parents=True)
        try:
            started = time.monotonic()
            build(temporary)
            _fsync_files(temporary)
            manifest = write_manifest(temporary, key, inputs, time.monotonic() - started)
            published = self._publish(temporary, key)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        if published is not None:
            shutil.rmtree(temporary, ignore_errors=True)
            return published, False
        return manifest, True

    def _publish(self, temporary: Path, key: str) -> Manifest | None:
        """Rename `temporary` to the entry; None when done, or the manifest of the valid
        entry that is already there."""
        try:
            os.rename(temporary, self.entry(key))
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            found = self.lookup(key)
            if found is None:
                raise
            logger.warning("%s was published by another builder meanwhile; using it", key)
            return found
        fsync_directory(self.root)
        return None

    def _discard(self, key: str) -> None:
        """Under the key's lock: move a corrupt entry out of the way (one rename, so no
        reader sees it half-deleted) and remove it with any builder leftovers of this key."""
        entry = self.entry(key)
        if entry.exists():
            aside = self.temp_root / f"{key}.corrupt.{uuid.uuid4().hex[:8]}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry, aside)
            logger.warning("moved the unusable entry %s aside to rebuild it", entry)
        for path in self._temp_dirs():
            if path.name.startswith(f"{key}."):
                shutil.rmtree(path, ignore_errors=True)

    def _temp_dirs(self) -> list[Path]:
        if not self.temp_root.is_dir():
            return []
        return [path for path in self.temp_root.iterdir() if KEY.fullmatch(path.name[:64])]


def _fsync_files(directory: Path) -> None:
    """Flush every artifact to stable storage before the manifest vouches for it."""
    for root, _, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                descriptor = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
        fsync_directory(Path(root))
