"""OCI registry source: `oci://registry/repository:tag` or `@sha256:<digest>`, a model
pushed as an ORAS artifact (`oras push registry/repo:tag *.safetensors config.json ...`).
Each layer with an `org.opencontainers.image.title` annotation is one file, named by it;
its blob is checked against the layer's sha256 digest. The manifest's digest pins the
listing (the marker's `commit`). docs/fetch.md.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from r1_runtime.fetch.errors import FetchError
from r1_runtime.fetch.http import HttpClient
from r1_runtime.fetch.listing import Listing, RemoteFile, checked_path
from r1_runtime.fetch.oci_auth import CONFIG_FORMAT, DOCKER_HUB, RegistryAuth

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ARTIFACT_MANIFEST = "application/vnd.oci.artifact.manifest.v1+json"  # ORAS before 1.0
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, ARTIFACT_MANIFEST))
TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"  # ORAS: a directory pushed as a tar archive
SHA256_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
MAX_MANIFEST_BYTES = 4 << 20


@dataclass(frozen=True, kw_only=True)
class OciSource:
    """`repository` at `reference` (a tag, or a `sha256:` digest) on `registry`
    (`host[:port]`). `basic` is the base64 `user:password` from the docker config, if any."""

    spec: str
    registry: str
    repository: str
    reference: str
    basic: str | None = None
    credentials_from: str = "no --credentials-file"
    revision: None = None

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.registry in DOCKER_HUB else self.registry

    @property
    def base_url(self) -> str:
        """`https://host/v2/<repository>`; plain http for a loopback registry, as Docker
        and containerd allow without configuration."""
        return f"{'http' if _is_loopback(self.api_host) else 'https'}://{self.api_host}/v2/{self.repository}"

    @property
    def name(self) -> str:
        separator = "@" if SHA256_DIGEST.match(self.reference) else ":"
        return f"{self.registry}/{self.repository}{separator}{self.reference}"

    def client(self) -> HttpClient:
        auth = RegistryAuth(
            host=self.api_host,
            scope=f"repository:{self.repository}:pull",
            basic=self.basic,
            credentials_from=self.credentials_from,
        )
        return HttpClient(auth=auth, explain=self.explain)

    def list(self, client: HttpClient) -> Listing:
        """The titled layers of the manifest (through an image index with one manifest)."""
        digest, manifest = self._manifest(client, self.reference)
        if "manifests" in manifest:
            digest, manifest = self._manifest(client, _only_manifest(manifest, self.name))
        layers = manifest.get("layers") or manifest.get("blobs") or []  # blobs: artifact manifest
        files = [_file(layer) for layer in layers if _is_file(layer)]
        if not files:
            raise FetchError(
                f"{self.name} has no layer annotated {TITLE}: not an ORAS artifact of files "
                "(push with `oras push <registry>/<repo>:<tag> <files>`)"
            )
        paths = [file.path for file in files]
        if len(set(paths)) != len(paths):
            raise FetchError(f"{self.name} names a file twice: {sorted(paths)}")
        return Listing(commit=digest, files=tuple(files))

    def file_url(self, commit: str, file: RemoteFile) -> str:
        return f"{self.base_url}/blobs/sha256:{file.sha256}"

    def _manifest(self, client: HttpClient, reference: str) -> tuple[str, dict[str, Any]]:
        """The manifest's digest and content, checked against a digest reference."""
        url = f"{self.base_url}/manifests/{reference}"
        with client.open(url, headers={"Accept": ACCEPT}).body as body:
            data = body.read(MAX_MANIFEST_BYTES + 1)
            served = body.headers.get("Docker-Content-Digest")
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        expected = reference if SHA256_DIGEST.match(reference) else served
        if expected and SHA256_DIGEST.match(expected) and expected != digest:
            raise FetchError(f"{url} served a manifest whose digest is {digest}, not {expected}")
        try:
            manifest = json.loads(data)
        except ValueError:
            manifest = None
        if len(data) > MAX_MANIFEST_BYTES or not isinstance(manifest, dict):
            raise FetchError(f"{url} is not an OCI manifest (JSON of at most 4 MiB)")
        return digest, manifest

    def explain(self, status: int, url: str, error_code: str) -> str:
        """What to fix, naming the repository and tag, and the credentials' origin."""
        if status in (401, 403) and self.basic:
            return (
                f"{self.registry} refused the credentials for {self.repository} from "
                f"{self.credentials_from}: check its auths entry and the pull permission"
            )
        if status in (401, 403):
            return (
                f"{self.name} needs credentials: set uri.credentialsSecretRef to {CONFIG_FORMAT} "
                "(e.g. the .dockerconfigjson key of a kubernetes.io/dockerconfigjson Secret), "
                "read from --credentials-file"
            )
        if status == 404 and "/blobs/" in url:
            return f"{url} is a layer of {self.name} but the registry does not serve it"
        if status == 404:
            return (
                f"{self.name} not found on {self.registry} ({error_code or 'no such manifest'}): "
                "check the repository and the tag or digest in the uri"
            )
        return f"request to {url} for {self.name} failed"


def _is_file(layer: Any) -> bool:
    return isinstance(layer, dict) and bool((layer.get("annotations") or {}).get(TITLE))


def _file(layer: dict[str, Any]) -> RemoteFile:
    annotations = layer["annotations"]
    path = checked_path(annotations[TITLE])
    if str(annotations.get(UNPACK, "")).lower() == "true":
        raise FetchError(
            f"layer {path} is a directory packed as an archive ({UNPACK}): push the files "
            "themselves (`oras push <ref> dir/*`), which the fetcher downloads one by one"
        )
    match = SHA256_DIGEST.match(str(layer.get("digest", "")))
    if not match:
        raise FetchError(
            f"layer {path} has digest {layer.get('digest')!r}: only sha256 is supported"
        )
    size = layer.get("size")
    if not isinstance(size, int) or size < 0:
        raise FetchError(f"layer {path} has no valid size")
    return RemoteFile(path=path, size=size, sha256=match[1])


def _only_manifest(index: dict[str, Any], name: str) -> str:
    manifests = index.get("manifests") or []
    digests = [str(entry.get("digest")) for entry in manifests if isinstance(entry, dict)]
    if len(digests) != 1 or not SHA256_DIGEST.match(digests[0]):
        raise FetchError(
            f"{name} is an image index with {len(digests)} manifests: name one by digest "
            "(oci://<registry>/<repo>@sha256:<digest>)"
        )
    return digests[0]


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if not host.endswith("]") else host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
