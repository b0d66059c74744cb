"""`--source` (with `--revision` and `--credentials-file`) parsed into a source, or a
UsageError that names the flag and what is supported."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from r1_runtime.fetch.errors import UsageError
from r1_runtime.fetch.hub import DEFAULT_ENDPOINT, HubSource
from r1_runtime.fetch.web import WebSource

SUPPORTED = (
    "hf://<org>/<repo> (with --revision) and http(s)://<directory with r1-manifest.json> "
    "(docs/fetch.md)"
)
UNSUPPORTED_SCHEMES = ("s3", "gs", "oci")
REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_source(
    source: str,
    *,
    revision: str | None,
    credentials_file: Path | None,
    env: Mapping[str, str],
) -> HubSource | WebSource:
    """The source `--source` names. A Hugging Face token comes from HF_TOKEN, else from
    the credentials file; HF_ENDPOINT replaces https://huggingface.co (a mirror)."""
    scheme = urlsplit(source).scheme
    credentials = _read_credentials(credentials_file)
    if scheme == "hf":
        repo = source.removeprefix("hf://").strip("/")
        if not REPO.match(repo):
            raise UsageError(f"--source {source}: expected hf://<org>/<repo>")
        endpoint = (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        token = env.get("HF_TOKEN", "").strip() or credentials  # a Secret's trailing newline
        return HubSource(repo=repo, revision=revision or "main", endpoint=endpoint, token=token)
    if revision is not None:
        raise UsageError(f"--revision applies to hf:// sources only, not to --source {source}")
    if scheme in ("http", "https") and urlsplit(source).netloc:
        return WebSource(spec=source, token=credentials)
    if scheme in UNSUPPORTED_SCHEMES:
        raise UsageError(
            f"--source {source}: {scheme}:// is not supported by this runtime yet; supported: "
            f"{SUPPORTED}. Serve the files over http(s) or copy them to a PVC (model.source.pvc)"
        )
    raise UsageError(f"--source {source}: supported sources are {SUPPORTED}")


def _read_credentials(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except OSError as error:
        raise UsageError(f"--credentials-file {path}: {error.strerror}") from None
