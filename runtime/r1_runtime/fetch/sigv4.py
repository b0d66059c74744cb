"""AWS Signature Version 4 on the standard library, as S3 (and S3-compatible stores, and
Cloud Storage's XML API with HMAC keys) checks it:
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html

The canonical URI is encoded once, the S3 way (other AWS services encode it twice); the
requests the fetcher signs are GET and HEAD without a body.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """An access key (AWS IAM, MinIO, Ceph, a Cloud Storage HMAC key) and, for temporary
    credentials, its session token."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


@dataclass(frozen=True, kw_only=True)
class Signer:
    """Signs requests for one region and service (`s3`; Cloud Storage: region `auto`)."""

    credentials: Credentials
    region: str
    service: str = "s3"

    def headers(
        self, method: str, url: str, extra: Mapping[str, str], now: datetime.datetime
    ) -> dict[str, str]:
        """The headers to add to a request without a body: `x-amz-date`,
        `x-amz-content-sha256`, `x-amz-security-token` (temporary credentials) and
        `Authorization`. `extra` (headers the request carries, e.g. `x-amz-checksum-mode`)
        is signed too."""
        added = {
            "x-amz-date": now.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ"),
            "x-amz-content-sha256": EMPTY_SHA256,
        }
        if self.credentials.session_token:
            added["x-amz-security-token"] = self.credentials.session_token
        signed = {**extra, **added}
        return added | {"Authorization": self.authorization(method, url, signed, EMPTY_SHA256)}

    def authorization(
        self, method: str, url: str, headers: Mapping[str, str], payload_sha256: str
    ) -> str:
        """The `Authorization` value for a request carrying `headers` (`x-amz-date` among
        them); every one of them is signed, and `host` (taken from `url`)."""
        canonical, signed_names = canonical_request(method, url, headers, payload_sha256)
        amz_date = _header(headers, "x-amz-date")
        scope = f"{amz_date[:8]}/{self.region}/{self.service}/aws4_request"
        signature = hmac.new(
            self.signing_key(amz_date[:8]),
            string_to_sign(amz_date, scope, canonical).encode(),
            hashlib.sha256,
        ).hexdigest()
        return (
            f"{ALGORITHM} Credential={self.credentials.access_key_id}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )

    def signing_key(self, date: str) -> bytes:
        key = f"AWS4{self.credentials.secret_access_key}".encode()
        for part in (date, self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key


def canonical_request(
    method: str, url: str, headers: Mapping[str, str], payload_sha256: str
) -> tuple[str, str]:
    """The canonical request and its `SignedHeaders` list (sorted lower-case names)."""
    parts = urlsplit(url)
    names = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    names["host"] = parts.netloc
    signed = sorted(names)
    lines = [
        method,
        quote(unquote(parts.path or "/"), safe="/~"),
        canonical_query(parts.query),
        *(f"{name}:{names[name]}" for name in signed),
        "",
        ";".join(signed),
        payload_sha256,
    ]
    return "\n".join(lines), ";".join(signed)


def canonical_query(query: str) -> str:
    """Each name and value URI-encoded (`/` too), sorted by name then value."""
    pairs = parse_qsl(query, keep_blank_values=True)
    encoded = sorted((quote(name, safe="~"), quote(value, safe="~")) for name, value in pairs)
    return "&".join(f"{name}={value}" for name, value in encoded)


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return "\n".join([ALGORITHM, amz_date, scope, digest])


def _header(headers: Mapping[str, str], wanted: str) -> str:
    return next(value for name, value in headers.items() if name.lower() == wanted)
