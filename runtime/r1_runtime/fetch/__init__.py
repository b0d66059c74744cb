"""`r1-runtime fetch`: put a model's weights on the hot tier, verified, once.

`parse_source` turns the flags into a source (Hugging Face hub, an http(s) directory with
a manifest, an S3 or Cloud Storage prefix, an ORAS artifact in an OCI registry);
`fetch(source, dest)` downloads what `dest` lacks under a lock shared by
all pods, verifies every byte and writes a completion marker last. docs/fetch.md.
"""

from r1_runtime.fetch.errors import FetchError, UsageError
from r1_runtime.fetch.fetcher import FetchResult, Options, fetch
from r1_runtime.fetch.source import parse_source
from r1_runtime.fetch.store import MARKER_NAME

__all__ = [
    "MARKER_NAME",
    "FetchError",
    "FetchResult",
    "Options",
    "UsageError",
    "fetch",
    "parse_source",
]
