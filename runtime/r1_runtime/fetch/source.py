"""`--source` (with `--revision` and `--credentials-file`) parsed into a source, or a
UsageError that names the flag and what is supported."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from r1_runtime.fetch.errors import UsageError
from r1_runtime.fetch.hub import DEFAULT_ENDPOINT, HubSource
from r1_runtime.fetch.oci import SHA256_DIGEST, OciSource
from r1_runtime.fetch.oci_auth import DOCKER_HUB, registry_basic
from r1_runtime.fetch.s3 import S3Source
from r1_runtime.fetch.store_config import gcs_config, s3_config
from r1_runtime.fetch.web import WebSource

SUPPORTED = (
    "hf://<org>/<repo> (with --revision), http(s)://<directory with r1-manifest.json>, "
    "s3://<bucket>/<prefix>, gs://<bucket>/<prefix> and oci://<registry>/<repo>:<tag> "
    "(docs/fetch.md)"
)
REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
OCI_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*$")
OCI_TAG = re.compile(r"^\w[\w.-]{0,127}$")

Source = HubSource | WebSource | S3Source | OciSource


def parse_source(
    source: str,
    *,
    revision: str | None,
    credentials_file: Path | None,
    env: Mapping[str, str],
) -> Source:
    """The source `--source` names. A Hugging Face token comes from HF_TOKEN, else from
    the credentials file; HF_ENDPOINT replaces https://huggingface.co (a mirror). The
    credentials file of the other schemes: docs/fetch.md."""
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
    if scheme in ("s3", "gs"):
        return _bucket_source(source, scheme, credentials, credentials_file, env)
    if scheme == "oci":
        return _oci_source(source, credentials, credentials_file)
    raise UsageError(f"--source {source}: supported sources are {SUPPORTED}")


def _bucket_source(
    source: str, scheme: str, text: str | None, path: Path | None, env: Mapping[str, str]
) -> S3Source:
    parts = urlsplit(source)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not BUCKET.match(bucket) or parts.query or parts.fragment:
        raise UsageError(f"--source {source}: expected {scheme}://<bucket>/<prefix>")
    store = s3_config(bucket, text, path, env) if scheme == "s3" else gcs_config(text, path)
    prefix = f"{prefix}/" if prefix else ""
    return S3Source(spec=source, scheme=scheme, bucket=bucket, prefix=prefix, store=store)


def _oci_source(source: str, text: str | None, path: Path | None) -> OciSource:
    registry, _, rest = source.removeprefix("oci://").partition("/")
    if "@" in rest:
        repository, _, reference = rest.partition("@")
        valid = bool(SHA256_DIGEST.match(reference))
    else:
        repository, _, reference = rest.rpartition(":")
        valid = bool(OCI_TAG.match(reference)) and "/" not in reference
    if registry in DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not (valid and registry and OCI_REPOSITORY.match(repository)):
        raise UsageError(
            f"--source {source}: expected oci://<registry>/<repository>:<tag> "
            "or oci://<registry>/<repository>@sha256:<digest>"
        )
    return OciSource(
        spec=source,
        registry=registry,
        repository=repository,
        reference=reference,
        basic=registry_basic(text, path, registry),
        credentials_from=f"--credentials-file {path}" if text else "no --credentials-file",
    )


def _read_credentials(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except OSError as error:
        raise UsageError(f"--credentials-file {path}: {error.strerror}") from None
