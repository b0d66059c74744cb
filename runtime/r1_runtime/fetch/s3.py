"""Object store source: `s3://bucket/prefix/` (AWS S3 or an S3-compatible store) and
`gs://bucket/prefix/` (Cloud Storage through its S3-compatible XML API). Every object under
the prefix is one file; requests are signed with SigV4 (sigv4.py). docs/fetch.md.

What each file is verified against, strongest first: the sha256 in `r1-manifest.json` at
the prefix (when there is one, it alone lists the files), the object's full-object
SHA-256 checksum (`x-amz-checksum-sha256`), its MD5 (Cloud Storage's `x-goog-hash`, or the
ETag of an S3 object uploaded in one part and not SSE-KMS/SSE-C encrypted); else (uploaded
in parts, or encrypted with KMS, without a checksum) its size only.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import re
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from urllib.parse import quote, urlencode, urlsplit

from r1_runtime.fetch.errors import FetchError, HttpStatusError
from r1_runtime.fetch.http import HttpClient
from r1_runtime.fetch.listing import Listing, RemoteFile, checked_file, checked_path
from r1_runtime.fetch.progress import log
from r1_runtime.fetch.sigv4 import Signer
from r1_runtime.fetch.store_config import FILE_FORMAT, StoreConfig
from r1_runtime.fetch.web import MANIFEST_NAME, parse_manifest

MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
    }
)
HEAD_WORKERS = 8
NOT_MD5_ENCRYPTION = frozenset({"aws:kms", "aws:kms:dsse"})  # their ETag is no MD5
REGION_CODES = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)


@dataclass(frozen=True)
class SigV4Auth:
    """Signs every request to the store's `host` (None: anonymous requests)."""

    signer: Signer | None
    host: str

    def apply(self, request: urllib.request.Request) -> None:
        if self.signer is None or urlsplit(request.full_url).netloc != self.host:
            return
        extra = {k: v for k, v in request.header_items() if k.lower().startswith("x-amz-")}
        now = datetime.datetime.now(datetime.UTC)
        signed = self.signer.headers(request.get_method(), request.full_url, extra, now)
        for name, value in signed.items():
            request.add_header(name, value)

    def renew(self, challenge: str) -> bool:
        return False


@dataclass(frozen=True, kw_only=True)
class S3Source:
    """The objects under `prefix` ("" or ending in `/`) in `bucket`; `spec` is --source."""

    spec: str
    scheme: str  # "s3" or "gs": only in messages
    bucket: str
    prefix: str
    store: StoreConfig
    revision: None = None

    @property
    def bucket_url(self) -> str:
        if self.store.path_style:
            return f"{self.store.endpoint}/{quote(self.bucket)}"
        scheme, host = self.store.endpoint.split("://")
        return f"{scheme}://{self.bucket}.{host}"

    @property
    def location(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}"

    def object_url(self, key: str) -> str:
        return f"{self.bucket_url}/{quote(key, safe='/~')}"

    def client(self) -> HttpClient:
        signer = None
        if self.store.credentials:
            region, service = self.store.region, "s3"
            signer = Signer(credentials=self.store.credentials, region=region, service=service)
        host = urlsplit(self.bucket_url).netloc
        return HttpClient(auth=SigV4Auth(signer, host), explain=self.explain)

    def list(self, client: HttpClient) -> Listing:
        """The manifest's files when the prefix holds `r1-manifest.json`, else every object
        under the prefix (ListObjectsV2, all pages)."""
        manifest = self._manifest(client)
        if manifest is not None:
            return manifest
        # NOTE: path-style lists `/<bucket>?...`, as boto3 does; virtual-hosted lists `/?...`.
        list_url = self.bucket_url if self.store.path_style else f"{self.bucket_url}/"
        items = list_objects(client, list_url, self.prefix)
        objects = [item for item in items if not item.key.endswith("/")]  # no folder markers
        with ThreadPoolExecutor(HEAD_WORKERS, thread_name_prefix="r1-fetch-head") as pool:
            files = list(pool.map(lambda item: self._file(client, item), objects))
        if not files:
            raise FetchError(
                f"no objects under {self.location} on {self.store.endpoint}: "
                "check the bucket and prefix in the uri"
            )
        size_only = [file.path for file in files if not (file.sha256 or file.md5)]
        if size_only:
            log(
                f"{len(size_only)} object(s) without a SHA-256 checksum or an MD5 (uploaded "
                f"in parts, or KMS-encrypted), e.g. {size_only[0]}: verified by size only; put "
                f"{MANIFEST_NAME} at the prefix for sha256 checks (docs/fetch.md)"
            )
        return Listing(commit=_listing_digest(files), files=tuple(files))

    def file_url(self, commit: str, file: RemoteFile) -> str:
        return self.object_url(self.prefix + file.path)

    def _manifest(self, client: HttpClient) -> Listing | None:
        url = self.object_url(self.prefix + MANIFEST_NAME)
        try:
            data = client.get_bytes(url)
        except HttpStatusError as error:
            if error.status == 404 or error.code == "AccessDenied":
                return None  # no manifest (a 403 without s3:ListBucket): the listing decides
            raise
        return parse_manifest(data, f"{self.location}{MANIFEST_NAME}")

    def _file(self, client: HttpClient, item: ObjectItem) -> RemoteFile:
        """The object as a file, with the strongest digest its HEAD tells (the listing
        alone cannot: an SSE-KMS object's ETag looks like an MD5 but is not one)."""
        path = checked_path(item.key.removeprefix(self.prefix))
        checksum_mode = {"x-amz-checksum-mode": "ENABLED"} if self.scheme == "s3" else {}
        headers = client.head(self.object_url(item.key), checksum_mode)
        file = RemoteFile(path=path, size=item.size, etag=item.etag)
        digests = object_digests(headers, item.etag)
        file = dataclasses.replace(file, sha256=digests.get("sha256"), md5=digests.get("md5"))
        return checked_file(file)

    def explain(self, status: int, url: str, error_code: str) -> str:
        """What to fix, naming the bucket and prefix, the credentials' origin and the setting."""
        where = self.store.credentials_from
        if status in (401, 403) and error_code in CREDENTIAL_CODES:
            return (
                f"{self.store.endpoint} rejected the credentials from {where}: "
                "check the key id and secret"
            )
        if status in (401, 403) and self.store.credentials is None:
            return f"{self.location} needs credentials: none are set; {self._how_to_set()}"
        if status in (401, 403):
            return (
                f"the credentials from {where} have no access to {self.location}: "
                "grant list and read on it"
            )
        if error_code in REGION_CODES:
            return f"{self.location} is not in region {self.store.region}: {self._region_hint()}"
        if status == 404 and error_code == "NoSuchBucket":
            return (
                f"bucket {self.bucket!r} not found on {self.store.endpoint}: "
                f"check the uri ({self.location})"
            )
        if status == 404:
            return f"{url} is listed under {self.location} but not found: was it deleted meanwhile?"
        return f"request to {url} for {self.location} failed"

    def _how_to_set(self) -> str:
        if self.scheme == "gs":
            return (
                "set uri.credentialsSecretRef to a Secret holding a Cloud Storage HMAC key as "
                f"{FILE_FORMAT} (read from --credentials-file)"
            )
        return (
            f"set uri.credentialsSecretRef (--credentials-file, {FILE_FORMAT}) "
            "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )

    def _region_hint(self) -> str:
        if self.scheme == "gs":
            return "Cloud Storage signs with region auto; remove region from the credentials file"
        return "set AWS_REGION (or region in the credentials file) to the bucket's region"


def object_digests(headers: Message, etag: str) -> dict[str, str]:
    """The digests an object's HEAD answer vouches for: `sha256` from a full-object
    `x-amz-checksum-sha256` (a composite one, `<b64>-N`, checksums the parts' checksums),
    `md5` from Cloud Storage's `x-goog-hash`, else from an ETag without `-` unless the
    object is SSE-KMS or SSE-C encrypted."""
    sha256 = _b64_hex(headers.get("x-amz-checksum-sha256", ""), 32)
    if sha256 and headers.get("x-amz-checksum-type", "FULL_OBJECT") == "FULL_OBJECT":
        return {"sha256": sha256}
    if headers.get("x-goog-hash"):
        parts = ",".join(headers.get_all("x-goog-hash", [])).split(",")
        hashes = dict(part.strip().partition("=")[::2] for part in parts)
        md5 = _b64_hex(hashes.get("md5", ""), 16)
        return {"md5": md5} if md5 else {}
    encrypted = headers.get("x-amz-server-side-encryption", "") in NOT_MD5_ENCRYPTION
    encrypted |= bool(headers.get("x-amz-server-side-encryption-customer-algorithm"))
    return {"md5": etag} if MD5_ETAG.match(etag) and not encrypted else {}


def _b64_hex(value: str, num_bytes: int) -> str | None:
    try:
        digest = base64.b64decode(value, validate=True)
    except binascii.Error:
        return None
    return digest.hex() if len(digest) == num_bytes else None


@dataclass(frozen=True)
class ObjectItem:
    key: str
    size: int
    etag: str


def list_objects(client: HttpClient, bucket_url: str, prefix: str) -> Iterator[ObjectItem]:
    """Every object under `prefix` (ListObjectsV2 on `bucket_url`, following continuation
    tokens)."""
    token: str | None = None
    while True:
        params = {"list-type": "2", "prefix": prefix} | (
            {"continuation-token": token} if token else {}
        )
        data = client.get_bytes(f"{bucket_url}?{urlencode(params, quote_via=quote, safe='~')}")
        page = _parse_page(data, bucket_url)
        yield from page.items
        if not page.next_token:
            return
        token = page.next_token


@dataclass(frozen=True)
class _Page:
    items: list[ObjectItem]
    next_token: str | None


def _parse_page(data: bytes, bucket_url: str) -> _Page:
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise FetchError(f"{bucket_url} answered no ListObjectsV2 XML ({error})") from None
    items = []
    for contents in _children(root, "Contents"):
        fields = {_tag(child): (child.text or "") for child in contents}
        try:
            size = int(fields["Size"])
        except (KeyError, ValueError):
            raise FetchError(f"{bucket_url}: an object without a size in the listing") from None
        items.append(ObjectItem(fields.get("Key", ""), size, fields.get("ETag", "").strip('"')))
    truncated = next((c.text for c in _children(root, "IsTruncated")), "false") == "true"
    token = next((c.text for c in _children(root, "NextContinuationToken")), None)
    if truncated and not token:
        raise FetchError(f"{bucket_url}: a truncated listing without NextContinuationToken")
    return _Page(items, token if truncated else None)


def _children(element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in element if _tag(child) == name]


def _tag(element: ElementTree.Element) -> str:
    return element.tag.rpartition("}")[2]  # without the namespace


def _listing_digest(files: list[RemoteFile]) -> str:
    """Pins the listing as a commit would: the staging of another version is wiped."""
    lines = sorted(f"{file.path}\0{file.size}\0{file.etag}\0{file.sha256}" for file in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
