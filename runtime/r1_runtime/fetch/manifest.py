"""Write `r1-manifest.json` for a model directory, so any static web server can serve it
as an http(s) source: `python -m r1_runtime.fetch.manifest DIR`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from r1_runtime.fetch.web import MANIFEST_NAME
from r1_runtime.files import sha256_file


def write_manifest(directory: Path) -> Path:
    """Write `directory/r1-manifest.json` listing every other file (hidden ones excluded),
    sorted, with its size and sha256; return its path."""
    files = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        hidden = any(part.startswith(".") for part in relative.parts)
        if not path.is_file() or hidden or relative.as_posix() == MANIFEST_NAME:
            continue
        size, sha256 = path.stat().st_size, sha256_file(path)
        files.append({"path": relative.as_posix(), "size": size, "sha256": sha256})
    manifest = directory / MANIFEST_NAME
    manifest.write_text(json.dumps({"files": files}, indent=1) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m r1_runtime.fetch.manifest", description=__doc__
    )
    parser.add_argument("directory", type=Path, help="model directory to describe")
    args = parser.parse_args(argv)
    print(f"wrote {write_manifest(args.directory)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
