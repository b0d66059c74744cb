"""`manifest.json`: what an engine entry was built from and what it holds.

The builder writes it last, inside the temporary directory, before the rename that publishes
the entry; a reader trusts an entry only if its manifest parses, names the expected key and
every file it lists is there at its recorded size.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


class CorruptEntryError(ValueError):
    """An entry that must not be loaded; the message says what is wrong with it."""


@dataclass(frozen=True)
class Manifest:
    key: str
    inputs: dict[str, Any]
    files: dict[str, int]  # path relative to the entry -> size in bytes
    build_seconds: float
    created: str  # ISO 8601, UTC
    builder: str  # host and pid

    @property
    def num_bytes(self) -> int:
        return sum(self.files.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "inputs": self.inputs,
            "files": [{"path": path, "size": size} for path, size in sorted(self.files.items())],
            "totalBytes": self.num_bytes,
            "buildSeconds": self.build_seconds,
            "created": self.created,
            "builder": self.builder,
        }


def write_manifest(
    directory: Path, key: str, inputs: dict[str, Any], build_seconds: float
) -> Manifest:
    """List the files under `directory` with their sizes and write `manifest.json` there,
    flushed to disk (the caller renames the directory next)."""
    manifest = Manifest(
        key=key,
        inputs=inputs,
        files=_file_sizes(directory),
        build_seconds=round(build_seconds, 3),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        builder=f"{socket.gethostname()}:{os.getpid()}",
    )
    path = directory / MANIFEST
    with path.open("w", encoding="utf-8") as file:
        json.dump(manifest.to_json(), file, indent=1, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    return manifest


def read_manifest(entry: Path, key: str) -> Manifest:
    """The manifest of `entry`, checked against `key` and the files on disk; a
    `CorruptEntryError` saying what is wrong otherwise."""
    try:
        raw = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        manifest = Manifest(
            key=raw["key"],
            inputs=raw["inputs"],
            files={str(file["path"]): int(file["size"]) for file in raw["files"]},
            build_seconds=float(raw["buildSeconds"]),
            created=str(raw["created"]),
            builder=str(raw.get("builder", "")),
        )
    except FileNotFoundError:
        raise CorruptEntryError(f"{entry}: no {MANIFEST} (a partial entry)") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CorruptEntryError(f"{entry}/{MANIFEST} cannot be read: {error!r}") from None
    if manifest.key != key:
        raise CorruptEntryError(f"{entry}/{MANIFEST} is for key {manifest.key}, not {key}")
    for path, size in manifest.files.items():
        actual = _size(entry / path)
        if actual != size:
            found = "missing" if actual is None else f"{actual} bytes"
            raise CorruptEntryError(f"{entry}/{path}: {found}, the manifest says {size} bytes")
    return manifest


def _file_sizes(directory: Path) -> dict[str, int]:
    sizes = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                sizes[path.relative_to(directory).as_posix()] = path.stat().st_size
    sizes.pop(MANIFEST, None)
    return sizes


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
