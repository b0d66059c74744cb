"""The engine cache on the warm tier: keys (`key`, `digests`, `device`), entries with their
manifests (`manifest`), the build lock (`lock`), the store (`store`) and the path from a
runtime config to a prepared engine (`resolve`). docs/engine-cache.md describes it."""
