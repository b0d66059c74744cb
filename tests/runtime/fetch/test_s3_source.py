"""`s3://` and `gs://` sources against a loopback store that checks every signature: a
paginated listing, objects byte-identical, a no-op second fetch, resumed and corrupted
downloads, the digest each object is verified with, and errors that say what to fix."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from r1_runtime.cli import main
from r1_runtime.fetch import MARKER_NAME, FetchError, fetch, parse_source
from r1_runtime.fetch.manifest import write_manifest

from .conftest import FAST
from .loopback import model_files
from .s3_server import Bucket, Key, S3Server

ACCESS_KEY, SECRET = "AKIDLOOPBACK", "loopback/secret+key"
PREFIX = "r1/demo/"
SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    directory = tmp_path_factory.mktemp("model")
    return directory, model_files(directory)


@dataclass
class Store:
    """A bucket `models` holding the model under `r1/demo/`, and how to reach it."""

    server: S3Server
    scheme: str
    env: dict[str, str]
    credentials: Path | None
    files: dict[str, bytes]

    @property
    def bucket(self) -> Bucket:
        return self.server.buckets["models"]

    def fetch(self, dest: Path, spec: str | None = None) -> str:
        source = parse_source(
            spec or f"{self.scheme}://models/r1/demo",
            revision=None,
            credentials_file=self.credentials,
            env=self.env,
        )
        out = io.StringIO()
        fetch(source, dest, out=out, options=FAST)
        return out.getvalue()


def bucket_of(files: dict[str, bytes]) -> Bucket:
    objects = {PREFIX + name: data for name, data in files.items()}
    objects |= {"r1/demo-old/config.json": b"{}", "r1/demo/folder/": b""}  # not the model's
    return Bucket(objects)


@pytest.fixture(
    params=[
        pytest.param("s3", id="s3 with the AWS variables and a custom endpoint"),
        pytest.param("gs", id="gs with an HMAC key in the credentials file"),
    ]
)
def store(
    request: pytest.FixtureRequest, model: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> Iterator[Store]:
    region = "us-east-1" if request.param == "s3" else "auto"
    with S3Server(keys={ACCESS_KEY: Key(SECRET)}, region=region) as server:
        server.buckets["models"] = bucket_of(model[1])
        if request.param == "s3":
            env = {
                "AWS_ENDPOINT_URL_S3": server.endpoint,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET,
            }
            yield Store(server, "s3", env, None, model[1])
            return
        server.google = True
        key = {"accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET, "endpoint": server.endpoint}
        credentials = tmp_path / "credentials"
        credentials.write_text(json.dumps(key) + "\n")
        yield Store(server, "gs", {}, credentials, model[1])


@pytest.fixture
def s3(model: tuple[Path, dict[str, bytes]]) -> Iterator[Store]:
    with S3Server(keys={ACCESS_KEY: Key(SECRET), "AKIDTEMP": Key("temp", "session")}) as server:
        server.buckets["models"] = bucket_of(model[1])
        env = {
            "AWS_ENDPOINT_URL": server.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
        }
        yield Store(server, "s3", env, None, model[1])


def assert_same_files(dest: Path, files: dict[str, bytes]) -> None:
    found = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert found - {MARKER_NAME} == set(files)
    for name, data in files.items():
        assert (dest / name).read_bytes() == data, name


def marker_files(dest: Path) -> dict[str, dict[str, object]]:
    return {file["path"]: file for file in json.loads((dest / MARKER_NAME).read_text())["files"]}


def test_first_fetch_lists_every_page_and_gets_each_object_once_byte_identical(
    store: Store, tmp_path: Path
) -> None:
    dest = tmp_path / "uri" / "abc"
    store.fetch(dest)
    assert_same_files(dest, store.files)
    pages = store.server.list_requests()
    assert len(pages) == 3, "5 keys, 2 a page"
    assert all(page.startswith("/models?list-type=2&prefix=r1%2Fdemo%2F") for page in pages)
    assert "&continuation-token=%2B%2B%2F%2F" in pages[1], "a token with + and / round-trips"
    for name in store.files:
        assert store.server.object_gets("models", PREFIX + name) == [None], name
    for name, file in marker_files(dest).items():
        assert file["md5"] == hashlib.md5(store.files[name]).hexdigest()
    assert all(r.authorization.startswith("AWS4-HMAC-SHA256 ") for r in store.server.requests)


def test_second_fetch_is_a_no_op_without_a_request(store: Store, tmp_path: Path) -> None:
    store.fetch(tmp_path / "abc")
    before = len(store.server.requests)
    assert "nothing to do" in store.fetch(tmp_path / "abc")
    assert len(store.server.requests) == before


def test_a_dropped_connection_resumes_with_a_signed_range_request(
    store: Store, tmp_path: Path
) -> None:
    store.server.faults.drop_after[PREFIX + SHARD] = 300_000
    log = store.fetch(tmp_path / "abc")
    assert store.server.object_gets("models", PREFIX + SHARD) == [None, "bytes=300000-"]
    assert "connection ended at byte 300000" in log
    assert_same_files(tmp_path / "abc", store.files)


def test_an_object_served_corrupt_is_detected_by_its_md5_etag_and_fetched_again(
    s3: Store, tmp_path: Path
) -> None:
    s3.server.faults.corrupt[PREFIX + SHARD] = 1
    log = s3.fetch(tmp_path / "abc")
    assert f"{SHARD}: downloaded bytes do not match (md5 " in log
    assert_same_files(tmp_path / "abc", s3.files)


def test_an_object_with_a_sha256_checksum_is_verified_by_it(s3: Store, tmp_path: Path) -> None:
    s3.bucket.checksummed.add(PREFIX + SHARD)
    s3.server.faults.corrupt[PREFIX + SHARD] = 2
    with pytest.raises(FetchError, match=rf"{SHARD} .* does not match its listed digest \(sha256"):
        s3.fetch(tmp_path / "abc")
    s3.fetch(tmp_path / "abc")
    file = marker_files(tmp_path / "abc")[SHARD]
    assert file["sha256"] == hashlib.sha256(s3.files[SHARD]).hexdigest()
    assert file["md5"] is None


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("multipart", id="uploaded in parts (ETag md5-of-md5s-N)"),
        pytest.param("kms", id="SSE-KMS encrypted (ETag no MD5)"),
    ],
)
def test_an_object_without_checksum_or_md5_is_verified_by_size_and_says_so(
    kind: str, s3: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    getattr(s3.bucket, kind).add(PREFIX + SHARD)
    s3.fetch(tmp_path / "abc")
    file = marker_files(tmp_path / "abc")[SHARD]
    assert (file["md5"], file["sha256"]) == (None, None) and file["etag"]
    assert "1 object(s) without a SHA-256 checksum or an MD5" in capsys.readouterr().err
    assert_same_files(tmp_path / "abc", s3.files)


def test_an_r1_manifest_at_the_prefix_is_preferred_to_the_listing(
    s3: Store, model: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    directory = tmp_path / "with-manifest"
    directory.mkdir()
    for name, data in s3.files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    manifest = write_manifest(directory).read_bytes()
    s3.bucket.objects[PREFIX + "r1-manifest.json"] = manifest
    s3.bucket.objects[PREFIX + "stray.bin"] = b"not in the manifest"
    s3.fetch(tmp_path / "abc")
    assert s3.server.list_requests() == []
    assert_same_files(tmp_path / "abc", s3.files)
    marker = json.loads((tmp_path / "abc" / MARKER_NAME).read_text())
    assert marker["commit"] == hashlib.sha256(manifest).hexdigest()
    assert all(file["sha256"] for file in marker["files"])


def test_temporary_credentials_send_their_session_token(s3: Store, tmp_path: Path) -> None:
    s3.env |= {"AWS_ACCESS_KEY_ID": "AKIDTEMP", "AWS_SECRET_ACCESS_KEY": "temp"}
    with pytest.raises(FetchError, match=r"HTTP 403 \(InvalidToken: .*rejected the credentials"):
        s3.fetch(tmp_path / "abc")
    s3.env["AWS_SESSION_TOKEN"] = "session"
    s3.fetch(tmp_path / "abc")
    assert_same_files(tmp_path / "abc", s3.files)


def test_a_public_bucket_is_read_without_credentials(s3: Store, tmp_path: Path) -> None:
    s3.bucket.public = True
    s3.env = {"AWS_ENDPOINT_URL": s3.env["AWS_ENDPOINT_URL"]}
    s3.fetch(tmp_path / "abc")
    assert_same_files(tmp_path / "abc", s3.files)
    assert all(request.authorization is None for request in s3.server.requests)


def run_cli(
    argv: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status = main(["fetch", *argv])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1
    return status, errors[0]


@pytest.mark.parametrize(
    ("source", "env", "credentials", "message"),
    [
        pytest.param(
            "s3://models/r1/demo",
            {"AWS_SECRET_ACCESS_KEY": "wrong"},
            None,
            r"HTTP 403 \(SignatureDoesNotMatch: The request signature .*\): http://127\.0\.0\.1:"
            r"\d+ rejected the credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            id="a wrong secret in the variables names them",
        ),
        pytest.param(
            "s3://models/r1/demo",
            {},
            {"accessKeyId": "AKIDUNKNOWN", "secretAccessKey": SECRET},
            r"HTTP 403 \(InvalidAccessKeyId: .*rejected the credentials from --credentials-file "
            r".*credentials: check the key id and secret",
            id="an unknown key in the credentials file names --credentials-file",
        ),
        pytest.param(
            "s3://models/r1/demo",
            {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
            None,
            r"HTTP 403 \(AccessDenied: Access Denied\): s3://models/r1/demo/ needs credentials: "
            r"none are set; set uri\.credentialsSecretRef \(--credentials-file, JSON .*\) or "
            r"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            id="no credentials for a private bucket says how to set them",
        ),
        pytest.param(
            "s3://nobucket/r1/demo",
            {},
            None,
            r"HTTP 404 \(NoSuchBucket: .*\): bucket 'nobucket' not found on http://127\.0\.0\.1:"
            r"\d+: check the uri \(s3://nobucket/r1/demo/\)",
            id="an unknown bucket is named",
        ),
        pytest.param(
            "s3://models/r1/nothing/",
            {},
            None,
            r"no objects under s3://models/r1/nothing/ on http://127\.0\.0\.1:\d+: "
            r"check the bucket and prefix",
            id="an empty prefix is named",
        ),
        pytest.param(
            "s3://models/r1/demo",
            {"AWS_REGION": "eu-west-1"},
            None,
            r"HTTP 400 \(AuthorizationHeaderMalformed: .*\): s3://models/r1/demo/ is not in region "
            r"eu-west-1: set AWS_REGION",
            id="another region names AWS_REGION",
        ),
        pytest.param(
            "gs://models/r1/demo",
            {},
            {"accessKeyId": ACCESS_KEY, "secretAccessKey": "wrong"},
            r"HTTP 403 \(SignatureDoesNotMatch: .*rejected the credentials from "
            r"--credentials-file",
            id="a wrong HMAC secret for gs names --credentials-file",
        ),
    ],
)
def test_store_errors_are_one_line_that_says_what_to_fix(
    source: str,
    env: dict[str, str],
    credentials: dict[str, str] | None,
    message: str,
    s3: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--source", source, "--dest", str(tmp_path / "m")]
    if credentials is not None:
        (tmp_path / "credentials").write_text(
            json.dumps(credentials | {"endpoint": s3.server.endpoint})
        )
        argv += ["--credentials-file", str(tmp_path / "credentials")]
    if source.startswith("gs://"):
        s3.server.region = "auto"
    status, error = run_cli(argv, s3.env | env, monkeypatch, capsys)
    assert status == 1
    assert re.search(message, error), error
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        pytest.param(
            "[default]\naws_access_key_id = AKID\n",
            {},
            r"--credentials-file .* looks like an AWS shared-credentials \(INI\) file; expected "
            r"JSON \{\"accessKeyId\"",
            id="an INI credentials file",
        ),
        pytest.param(
            '{"type": "service_account", "private_key": "..."}',
            {},
            r"is a service-account key, which the fetcher cannot exchange .*gcloud storage hmac",
            id="a service-account key",
        ),
        pytest.param(
            '{"accessKeyId": "a", "secretAccessKey": "b", "secret": "c"}',
            {},
            r"unknown key\(s\) secret; expected JSON",
            id="a misspelt key",
        ),
        pytest.param(
            None,
            {"AWS_ACCESS_KEY_ID": "AKID"},
            r"set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither",
            id="half a key in the variables",
        ),
        pytest.param(
            None,
            {"AWS_ENDPOINT_URL_S3": "minio:9000"},
            r"AWS_ENDPOINT_URL_S3 'minio:9000': expected http\(s\)://host\[:port\]",
            id="an endpoint without a scheme",
        ),
    ],
)
def test_credentials_and_endpoints_the_fetcher_cannot_use_exit_2(
    text: str | None,
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--source", "s3://models/r1", "--dest", str(tmp_path / "m")]
    if text is not None:
        (tmp_path / "credentials").write_text(text)
        argv += ["--credentials-file", str(tmp_path / "credentials")]
    status, error = run_cli(argv, env, monkeypatch, capsys)
    assert status == 2
    assert re.search(message, error), error


@pytest.mark.parametrize(
    ("source", "env", "url"),
    [
        pytest.param(
            "s3://models/r1",
            {"AWS_REGION": "eu-west-1"},
            "https://models.s3.eu-west-1.amazonaws.com/r1/config.json",
            id="AWS: virtual-hosted in the bucket's region",
        ),
        pytest.param(
            "s3://models.example.com/r1/",
            {},
            "https://s3.us-east-1.amazonaws.com/models.example.com/r1/config.json",
            id="AWS: a dotted bucket path-style (TLS wildcard)",
        ),
        pytest.param(
            "s3://models/r1",
            {"AWS_ENDPOINT_URL": "http://minio.storage:9000/", "AWS_DEFAULT_REGION": "x"},
            "http://minio.storage:9000/models/r1/config.json",
            id="a custom endpoint path-style",
        ),
        pytest.param(
            "gs://models/r1",
            {"AWS_ENDPOINT_URL": "http://ignored"},
            "https://storage.googleapis.com/models/r1/config.json",
            id="Cloud Storage's XML API",
        ),
    ],
)
def test_object_urls(source: str, env: dict[str, str], url: str) -> None:
    parsed = parse_source(source, revision=None, credentials_file=None, env=env)
    from r1_runtime.fetch.listing import RemoteFile

    assert parsed.file_url("", RemoteFile(path="config.json", size=1, md5="0" * 32)) == url
