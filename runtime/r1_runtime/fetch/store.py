"""The destination on the hot tier: completion marker, lock and staging directory.

Next to `--dest` (same filesystem, so renames are atomic):
- `.<name>.r1-fetch.lock`: the lock fetchers of all pods take before changing anything;
- `.<name>.r1-fetch/`: staging: `<path>.part` while downloading, `<path>` once verified.
Inside `--dest`, `.r1-fetch-complete.json` is written last; without it `--dest` is never
taken as complete.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1_runtime.fetch.listing import Listing, RemoteFile
from r1_runtime.files import fsync_directory, write_atomically

MARKER_NAME = ".r1-fetch-complete.json"
COMMIT_NAME = ".r1-fetch-commit"


@dataclass(frozen=True)
class Layout:
    """Where the fetch of `dest` keeps its lock, staging directory and marker."""

    dest: Path

    @property
    def staging(self) -> Path:
        return self.dest.parent / f".{self.dest.name}.r1-fetch"

    @property
    def lock_path(self) -> Path:
        return self.dest.parent / f".{self.dest.name}.r1-fetch.lock"

    @property
    def marker(self) -> Path:
        return self.dest / MARKER_NAME


@dataclass(frozen=True, kw_only=True)
class Marker:
    """A complete copy of `source` at `revision` (`commit`), and the size and mtime each
    file had when it was verified: a file whose stat changed since is verified again."""

    source: str
    revision: str | None
    listing: Listing
    stats: dict[str, tuple[int, int]]

    def is_for(self, source: str, revision: str | None) -> bool:
        return (self.source, self.revision) == (source, revision)

    def changed_files(self, dest: Path) -> list[RemoteFile]:
        """Files missing from `dest` or whose size or mtime differs from the marker's."""
        return [
            file
            for file in self.listing.files
            if _stat(dest / file.path) != self.stats.get(file.path)
        ]


def read_marker(layout: Layout) -> Marker | None:
    """The marker in `dest`, or None when there is none or it cannot be read."""
    try:
        data = json.loads(layout.marker.read_text())
        files = [RemoteFile.from_json(file) for file in data["files"]]
        return Marker(
            source=data["source"],
            revision=data["revision"],
            listing=Listing(commit=data["commit"], files=tuple(files)),
            stats={file["path"]: (file["size"], file["mtimeNs"]) for file in data["files"]},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_marker(directory: Path, source: str, revision: str | None, listing: Listing) -> None:
    """Write the marker atomically, with the stats the files in `directory` have now."""
    files: list[dict[str, Any]] = []
    for file in listing.files:
        stat = (directory / file.path).stat()
        files.append(file.to_json() | {"mtimeNs": stat.st_mtime_ns})
    data = {
        "source": source,
        "revision": revision,
        "commit": listing.commit,
        "completedAt": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "bytes": listing.num_bytes,
        "files": files,
    }
    write_atomically(directory / MARKER_NAME, json.dumps(data, indent=1) + "\n")


def remove_marker(layout: Layout) -> None:
    """Drop the marker before `dest` changes, durably: a crash leaves it incomplete."""
    if layout.marker.exists():
        layout.marker.unlink()
        fsync_directory(layout.dest)


def prepare_staging(layout: Layout, commit: str) -> None:
    """An empty staging directory unless the one there is for the same `commit`."""
    stamp = layout.staging / COMMIT_NAME
    if layout.staging.exists() and (not stamp.exists() or stamp.read_text() != commit):
        shutil.rmtree(layout.staging)
    layout.staging.mkdir(parents=True, exist_ok=True)
    if not stamp.exists():
        write_atomically(stamp, commit)


def publish(layout: Layout, source: str, revision: str | None, listing: Listing) -> None:
    """Move the staged files into `dest`, then write the marker (last).

    A new `dest` is the staging directory renamed, marker inside: it appears complete in
    one step. An existing one gets each staged file renamed over the old one.
    """
    staged = [file for file in listing.files if (layout.staging / file.path).exists()]
    (layout.staging / COMMIT_NAME).unlink(missing_ok=True)
    if not layout.dest.exists():
        write_marker(layout.staging, source, revision, listing)
        layout.staging.rename(layout.dest)
        fsync_directory(layout.dest.parent)
        return
    for file in staged:
        target = layout.dest / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(layout.staging / file.path, target)
    fsync_directory(layout.dest)
    write_marker(layout.dest, source, revision, listing)
    shutil.rmtree(layout.staging, ignore_errors=True)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)
