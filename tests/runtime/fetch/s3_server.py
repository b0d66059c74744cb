"""A loopback object store that answers like S3 (path-style, as for a custom endpoint)
and like Cloud Storage's XML API (the same protocol, region `auto`):

- `GET /{bucket}?list-type=2&prefix=P[&continuation-token=T]`: ListObjectsV2 XML, at most
  `page_size` keys a page, continuation tokens holding `+`, `/` and `=`;
- `GET|HEAD /{bucket}/{key}`: the object (ETag: its MD5, or `<md5>-3` for one uploaded
  in parts), `Range: bytes=N-` answers 206; `x-amz-checksum-mode: ENABLED` adds
  `x-amz-checksum-sha256` for objects uploaded with a SHA-256 checksum;
- every signed request is checked by recomputing its SigV4 signature here, from what
  arrived on the wire (independently of r1_runtime.fetch.sigv4): 403
  InvalidAccessKeyId / SignatureDoesNotMatch / InvalidToken, 400
  AuthorizationHeaderMalformed for another region; unsigned requests only for
  `public` buckets; 404 NoSuchBucket / NoSuchKey, as XML error bodies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from .loopback import Handler, LoopbackServer

TOKEN_PREFIX = base64.b64encode(bytes([0xFB, 0xEF, 0xFF])).decode()  # "++//"


@dataclass
class Key:
    secret: str
    session_token: str | None = None


@dataclass
class Bucket:
    objects: dict[str, bytes]
    public: bool = False
    checksummed: set[str] = field(default_factory=set)  # uploaded with a SHA-256 checksum
    multipart: set[str] = field(default_factory=set)  # uploaded in parts, no checksum
    kms: set[str] = field(default_factory=set)  # SSE-KMS: an ETag that is not the MD5


class S3Server(LoopbackServer):
    def __init__(self, *, keys: dict[str, Key], region: str = "us-east-1", page_size: int = 2):
        super().__init__(S3Handler)
        self.buckets: dict[str, Bucket] = {}
        self.keys = keys
        self.region = region
        self.page_size = page_size
        self.google = False  # Cloud Storage: x-goog-hash holds the MD5, the ETag may not

    def list_requests(self) -> list[str]:
        return [r.path for r in self.requests if "list-type=2" in r.path]

    def object_gets(self, bucket: str, key: str) -> list[str | None]:
        """The Range header of each GET of `key` (None: from byte 0)."""
        path = f"/{bucket}/{quote(key, safe='/~')}"
        return [r.range for r in self.requests if r.method == "GET" and r.path == path]


def sigv4_signature(
    secret: str, scope: list[str], string_to_sign: str
) -> str:  # scope: date, region, service, "aws4_request"
    key = f"AWS4{secret}".encode()
    for part in scope:
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def uri_encode(text: str, *, slash: bool) -> str:
    """AWS's UriEncode: every byte but A-Z a-z 0-9 - _ . ~ (and `/` in a path)."""
    return "".join(
        char
        if char.isascii() and (char.isalnum() or char in "-_.~" or (slash and char == "/"))
        else "".join(f"%{byte:02X}" for byte in char.encode())
        for char in text
    )


class S3Handler(Handler):
    server_state: S3Server

    def do_GET(self) -> None:
        self.record()
        self._serve()

    def do_HEAD(self) -> None:
        self.record()
        self._serve()

    def _serve(self) -> None:
        url = urlsplit(self.path)
        bucket_name, _, key = unquote(url.path).lstrip("/").partition("/")
        bucket = self.server_state.buckets.get(bucket_name)
        if self.headers.get("Authorization"):
            if not self._signature_checks_out():
                return
        elif not (bucket and bucket.public):
            return self._error(403, "AccessDenied", "Access Denied")
        if bucket is None:
            return self._error(404, "NoSuchBucket", "The specified bucket does not exist")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        if not key and query.get("list-type") == "2":
            return self._list(bucket_name, bucket, query)
        if key not in bucket.objects:
            return self._error(404, "NoSuchKey", "The specified key does not exist.")
        self._object(bucket, key)

    def _list(self, name: str, bucket: Bucket, query: dict[str, str]) -> None:
        keys = sorted(key for key in bucket.objects if key.startswith(query.get("prefix", "")))
        token = query.get("continuation-token")
        start = int(token.removeprefix(TOKEN_PREFIX)) if token else 0
        page = keys[start : start + self.server_state.page_size]
        truncated = start + len(page) < len(keys)
        contents = "".join(self._contents(bucket, key) for key in page)
        next_token = (
            f"<NextContinuationToken>{TOKEN_PREFIX}{start + len(page)}</NextContinuationToken>"
            if truncated
            else ""
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{escape(name)}</Name><Prefix>{escape(query.get('prefix', ''))}</Prefix>"
            f"<KeyCount>{len(page)}</KeyCount><IsTruncated>{str(truncated).lower()}</IsTruncated>"
            f"{contents}{next_token}</ListBucketResult>"
        )
        self.send(200, body.encode(), {"Content-Type": "application/xml"})

    def _contents(self, bucket: Bucket, key: str) -> str:
        checksum = (
            "<ChecksumAlgorithm>SHA256</ChecksumAlgorithm>" if key in bucket.checksummed else ""
        )
        return (
            f"<Contents><Key>{escape(key)}</Key><LastModified>2026-11-01T00:00:00.000Z"
            f"</LastModified><ETag>&quot;{self._etag(bucket, key)}&quot;</ETag>{checksum}"
            f"<Size>{len(bucket.objects[key])}</Size><StorageClass>STANDARD</StorageClass>"
            "</Contents>"
        )

    def _object(self, bucket: Bucket, key: str) -> None:
        data = bucket.objects[key]
        headers = {"ETag": f'"{self._etag(bucket, key)}"', "Accept-Ranges": "bytes"}
        if key in bucket.kms:
            headers["x-amz-server-side-encryption"] = "aws:kms"
        if self.server_state.google:
            md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
            headers["x-goog-hash"] = f"crc32c=n03x6A==,md5={md5}"
        if key in bucket.checksummed and self.headers.get("x-amz-checksum-mode") == "ENABLED":
            sha256 = base64.b64encode(hashlib.sha256(data).digest()).decode()
            headers |= {"x-amz-checksum-sha256": sha256, "x-amz-checksum-type": "FULL_OBJECT"}
        self.send_object(key, data, headers)

    def _signature_checks_out(self) -> bool:
        """Recompute the request's SigV4 signature; answer the error S3 would if it differs."""
        state = self.server_state
        fields = dict(
            part.strip().split("=", 1)
            for part in self.headers["Authorization"].removeprefix("AWS4-HMAC-SHA256 ").split(",")
        )
        key_id, *scope = fields["Credential"].split("/")
        key = state.keys.get(key_id)
        if key is None:
            self._error(403, "InvalidAccessKeyId", "The AWS Access Key Id does not exist.")
            return False
        if scope[1] != state.region:
            self._error(
                400,
                "AuthorizationHeaderMalformed",
                f"the region '{scope[1]}' is wrong; expecting '{state.region}'",
            )
            return False
        if key.session_token and self.headers.get("x-amz-security-token") != key.session_token:
            self._error(
                403, "InvalidToken", "The provided token is malformed or otherwise invalid."
            )
            return False
        names = fields["SignedHeaders"].split(";")
        unsigned = [name for name in self.headers if name.lower().startswith("x-amz-")]
        if any(name.lower() not in names for name in unsigned) or "host" not in names:
            self._error(403, "AccessDenied", "There were headers present that were not signed")
            return False
        url = urlsplit(self.path)
        query = sorted(
            (uri_encode(name, slash=False), uri_encode(value, slash=False))
            for name, value in parse_qsl(url.query, keep_blank_values=True)
        )
        canonical = "\n".join(
            [
                self.command,
                uri_encode(unquote(url.path), slash=True),
                "&".join(f"{name}={value}" for name, value in query),
                *(f"{name}:{' '.join(self.headers[name].split())}" for name in names),
                "",
                fields["SignedHeaders"],
                self.headers["x-amz-content-sha256"],
            ]
        )
        amz_date = self.headers["x-amz-date"]
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                "/".join(scope),
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        if sigv4_signature(key.secret, scope, string_to_sign) != fields["Signature"]:
            self._error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
            return False
        return True

    def _error(self, status: int, code: str, message: str) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        )
        self.send(status, body.encode(), {"Content-Type": "application/xml"})

    def _etag(self, bucket: Bucket, key: str) -> str:
        md5 = hashlib.md5(bucket.objects[key]).hexdigest()
        if key in bucket.multipart:
            return f"{hashlib.md5(md5.encode()).hexdigest()}-3"
        if key in bucket.kms or self.server_state.google:
            return hashlib.md5(f"not the md5 of {key}".encode()).hexdigest()
        return md5
