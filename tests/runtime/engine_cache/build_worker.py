"""Run by the tests as a separate process: get or build one entry with the file backend.
Arguments: ROOT KEY BUILDS_FILE BUILD_SECONDS. Prints the result as one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FileBackend
from r1_runtime.engine_cache.store import EngineStore

if __name__ == "__main__":
    root, key, builds, seconds = sys.argv[1:5]
    backend = FileBackend(Path(builds), build_seconds=float(seconds))
    store = EngineStore(Path(root), poll_s=0.05)
    resolved = store.get_or_build(key, {"key": key}, backend.build_or_load)
    print(json.dumps({"isBuilt": resolved.is_built, "lockWaitS": resolved.lock_wait_s}))
