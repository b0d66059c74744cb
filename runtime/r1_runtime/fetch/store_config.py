"""Where an object store is and which key signs for it: from `--credentials-file` (the
Secret in `uri.credentialsSecretRef`) or the standard AWS variables. docs/fetch.md.

The credentials file is JSON: `{"accessKeyId", "secretAccessKey", "sessionToken"?,
"region"?, "endpoint"?}` (an AWS access key, a MinIO/Ceph key, a Cloud Storage HMAC key).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from r1_runtime.fetch.errors import UsageError
from r1_runtime.fetch.sigv4 import Credentials

GCS_ENDPOINT = "https://storage.googleapis.com"
FILE_KEYS = {"accessKeyId", "secretAccessKey", "sessionToken", "region", "endpoint"}
FILE_FORMAT = (
    'JSON {"accessKeyId": ..., "secretAccessKey": ..., "sessionToken"?, "region"?, "endpoint"?}'
)
ENV_PAIR = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """The store's endpoint (`scheme://host[:port]`), how buckets are addressed, the
    region requests are signed for, and the credentials (None: anonymous requests).
    `credentials_from` names where they came from, for error messages."""

    endpoint: str
    path_style: bool
    region: str
    credentials: Credentials | None
    credentials_from: str


def s3_config(
    bucket: str, text: str | None, path: Path | None, env: Mapping[str, str]
) -> StoreConfig:
    """S3 or an S3-compatible store. The credentials file wins over the AWS variables;
    a custom endpoint (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or `endpoint` in the file)
    is addressed path-style, as MinIO and Ceph expect."""
    data = _read_file(text, path)
    region = data.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    region = region or "us-east-1"
    credentials: Credentials | None = _credentials(data) if data else _env_credentials(env)
    where = f"--credentials-file {path}" if data else ENV_PAIR
    endpoint, name = data.get("endpoint"), "endpoint in --credentials-file"
    if not endpoint:
        name = "AWS_ENDPOINT_URL_S3" if env.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        return StoreConfig(
            endpoint=_checked_endpoint(endpoint, name),
            path_style=True,
            region=region,
            credentials=credentials,
            credentials_from=where,
        )
    return StoreConfig(
        endpoint=f"https://s3.{region}.amazonaws.com",
        path_style="." in bucket,  # a dotted bucket would break the TLS wildcard name
        region=region,
        credentials=credentials,
        credentials_from=where,
    )


def gcs_config(text: str | None, path: Path | None) -> StoreConfig:
    """Cloud Storage through its XML API (S3-compatible): an HMAC key signs with SigV4,
    region `auto`. No credentials file: anonymous requests (a public bucket)."""
    data = _read_file(text, path)
    endpoint = data.get("endpoint")
    return StoreConfig(
        endpoint=_checked_endpoint(endpoint, "endpoint in --credentials-file")
        if endpoint
        else GCS_ENDPOINT,
        path_style=True,
        region=data.get("region") or "auto",
        credentials=_credentials(data) if data else None,
        credentials_from=f"--credentials-file {path}",
    )


def _read_file(text: str | None, path: Path | None) -> dict[str, Any]:
    if text is None:
        return {}
    where = f"--credentials-file {path}"
    if text.startswith("["):
        raise UsageError(
            f"{where} looks like an AWS shared-credentials (INI) file; expected {FILE_FORMAT}"
        )
    try:
        data = json.loads(text)
    except ValueError:
        raise UsageError(f"{where} is not JSON; expected {FILE_FORMAT}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected {FILE_FORMAT}")
    if data.get("type") == "service_account":
        raise UsageError(
            f"{where} is a service-account key, which the fetcher cannot exchange for a token: "
            "create an HMAC key for the service account (`gcloud storage hmac create SA`) "
            'and put {"accessKeyId": <accessId>, "secretAccessKey": <secret>} in the Secret'
        )
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {FILE_FORMAT}")
    if not all(
        isinstance(data.get(key), str) and data[key] for key in ("accessKeyId", "secretAccessKey")
    ):
        raise UsageError(f"{where}: accessKeyId and secretAccessKey are required strings")
    return data


def _credentials(data: Mapping[str, Any]) -> Credentials:
    return Credentials(
        access_key_id=data["accessKeyId"],
        secret_access_key=data["secretAccessKey"],
        session_token=data.get("sessionToken") or None,
    )


def _env_credentials(env: Mapping[str, str]) -> Credentials | None:
    key_id, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not key_id and not secret:
        return None
    if not key_id or not secret:
        raise UsageError(f"set both {ENV_PAIR}, or neither (then --credentials-file)")
    return Credentials(
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=env.get("AWS_SESSION_TOKEN") or None,
    )


def _checked_endpoint(endpoint: str, name: str) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
        raise UsageError(f"{name} {endpoint!r}: expected http(s)://host[:port]")
    return f"{parts.scheme}://{parts.netloc}"
