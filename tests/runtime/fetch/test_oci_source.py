"""`oci://` sources against a loopback registry: an ORAS artifact fetched byte-identical
through the bearer-token dance and a redirect to another host, a no-op second fetch, a
resumed and a corrupted blob, private registries, and errors that say what to fix."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from r1_runtime.cli import main
from r1_runtime.fetch import MARKER_NAME, FetchError, fetch, parse_source

from .conftest import FAST
from .loopback import model_files
from .oci_server import OCI_INDEX, Registry, digest_of

REPO = "models/demo"
SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return model_files(tmp_path_factory.mktemp("model"))


@pytest.fixture
def registry(files: dict[str, bytes]) -> Iterator[Registry]:
    """An anonymous registry (tokens for everyone) holding the model as models/demo:v1."""
    with Registry() as server:
        server.push(REPO, "v1", files)
        yield server


def docker_config(tmp_path: Path, registry: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return path


def fetch_oci(spec: str, dest: Path, credentials: Path | None = None) -> str:
    source = parse_source(spec, revision=None, credentials_file=credentials, env={})
    out = io.StringIO()
    fetch(source, dest, out=out, options=FAST)
    return out.getvalue()


def assert_same_files(dest: Path, files: dict[str, bytes]) -> None:
    found = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert found - {MARKER_NAME} == set(files)
    for name, data in files.items():
        assert (dest / name).read_bytes() == data, name


def test_first_fetch_gets_each_blob_once_byte_identical_and_pins_the_manifest_digest(
    registry: Registry, files: dict[str, bytes], tmp_path: Path
) -> None:
    dest = tmp_path / "uri" / "abc"
    fetch_oci(f"oci://{registry.registry}/{REPO}:v1", dest)
    assert_same_files(dest, files)
    assert all(registry.cdn_gets(data) == [None] for data in files.values())
    marker = json.loads((dest / MARKER_NAME).read_text())
    assert marker["commit"] == registry.repositories[REPO].tags["v1"]
    assert marker["source"] == f"oci://{registry.registry}/{REPO}:v1"
    cdn = [r for r in registry.requests if r.path.startswith("/cdn/")]
    v2 = [r for r in registry.requests if r.path.startswith("/v2/")]
    assert cdn and all(r.authorization is None for r in cdn), "the token stays with the registry"
    assert v2[0].authorization is None and v2[1].authorization == "Bearer token-1"
    assert registry.issued == 1


def test_second_fetch_is_a_no_op_without_a_request(registry: Registry, tmp_path: Path) -> None:
    fetch_oci(f"oci://{registry.registry}/{REPO}:v1", tmp_path / "abc")
    before = len(registry.requests)
    assert "nothing to do" in fetch_oci(f"oci://{registry.registry}/{REPO}:v1", tmp_path / "abc")
    assert len(registry.requests) == before


def test_a_dropped_connection_resumes_the_blob_with_a_range_request(
    registry: Registry, files: dict[str, bytes], tmp_path: Path
) -> None:
    registry.faults.drop_after[SHARD] = 300_000
    log = fetch_oci(f"oci://{registry.registry}/{REPO}:v1", tmp_path / "abc")
    assert registry.cdn_gets(files[SHARD]) == [None, "bytes=300000-"]
    assert "connection ended at byte 300000" in log
    assert_same_files(tmp_path / "abc", files)


def test_a_corrupted_blob_is_detected_by_its_digest(
    registry: Registry, files: dict[str, bytes], tmp_path: Path
) -> None:
    registry.faults.corrupt[SHARD] = 1
    log = fetch_oci(f"oci://{registry.registry}/{REPO}:v1", tmp_path / "abc")
    assert f"{SHARD}: downloaded bytes do not match (sha256 " in log
    assert_same_files(tmp_path / "abc", files)
    registry.faults.corrupt[SHARD] = 2
    with pytest.raises(FetchError, match=rf"{SHARD} from .*/blobs/sha256:.* does not match"):
        fetch_oci(f"oci://{registry.registry}/{REPO}:v1", tmp_path / "other")


def test_a_digest_reference_and_an_image_index_with_one_manifest(
    registry: Registry, files: dict[str, bytes], tmp_path: Path
) -> None:
    digest = registry.repositories[REPO].tags["v1"]
    fetch_oci(f"oci://{registry.registry}/{REPO}@{digest}", tmp_path / "by-digest")
    assert_same_files(tmp_path / "by-digest", files)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest}
        ],
    }
    registry.put_manifest(REPO, "indexed", index)
    fetch_oci(f"oci://{registry.registry}/{REPO}:indexed", tmp_path / "indexed")
    assert_same_files(tmp_path / "indexed", files)
    assert json.loads((tmp_path / "indexed" / MARKER_NAME).read_text())["commit"] == digest


def test_an_expired_token_is_renewed_during_the_download(
    files: dict[str, bytes], tmp_path: Path
) -> None:
    with Registry(token_uses=3) as registry:
        registry.push(REPO, "v1", files)
        fetch_oci(f"oci://{registry.registry}/{REPO}:v1", tmp_path / "abc")
    assert_same_files(tmp_path / "abc", files)
    assert registry.issued >= 2


@pytest.mark.parametrize(
    "auth", [pytest.param("token", id="a token service"), pytest.param("basic", id="Basic auth")]
)
def test_a_private_registry_takes_the_user_from_a_docker_config(
    auth: str, files: dict[str, bytes], tmp_path: Path
) -> None:
    with Registry(auth=auth, users={"robot": "s3cret"}) as registry:
        registry.push(REPO, "v1", files)
        spec = f"oci://{registry.registry}/{REPO}:v1"
        with pytest.raises(
            FetchError,
            match=r"credentials.*: set uri\.credentialsSecretRef to a docker config\.json "
            r".*--credentials-file",
        ):
            fetch_oci(spec, tmp_path / "abc")
        wrong = docker_config(tmp_path, registry.registry, "robot", "wrong")
        with pytest.raises(FetchError, match=r"rejected the user and password|refused the cred"):
            fetch_oci(spec, tmp_path / "abc", wrong)
        fetch_oci(
            spec, tmp_path / "abc", docker_config(tmp_path, registry.registry, "robot", "s3cret")
        )
    assert_same_files(tmp_path / "abc", files)


def run_cli(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    status = main(["fetch", *argv])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1
    return status, errors[0]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        pytest.param(
            f"{REPO}:v9",
            r"HTTP 404 \(MANIFEST_UNKNOWN: manifest unknown\): 127\.0\.0\.1:\d+/models/demo:v9 not "
            r"found on 127\.0\.0\.1:\d+ \(MANIFEST_UNKNOWN\): check the repository and the tag",
            id="an unknown tag names the repository and tag",
        ),
        pytest.param(
            "models/other:v1",
            r"HTTP 404 \(NAME_UNKNOWN: .*\): 127\.0\.0\.1:\d+/models/other:v1 not found",
            id="an unknown repository is named",
        ),
        pytest.param(
            f"{REPO}@sha256:{'0' * 64}",
            rf"/models/demo@sha256:{'0' * 64} not found",
            id="an unknown digest is named",
        ),
    ],
)
def test_registry_errors_are_one_line_that_says_what_to_fix(
    reference: str,
    message: str,
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--source", f"oci://{registry.registry}/{reference}", "--dest", str(tmp_path / "m")]
    status, error = run_cli(argv, monkeypatch, capsys)
    assert status == 1
    assert re.search(message, error), error
    assert not (tmp_path / "m").exists()


def test_a_docker_config_without_the_registry_exits_2_naming_what_it_has(
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = docker_config(tmp_path, "https://index.docker.io/v1/", "me", "pw")
    argv = ["--source", f"oci://{registry.registry}/{REPO}:v1", "--dest", str(tmp_path / "m")]
    status, error = run_cli([*argv, "--credentials-file", str(config)], monkeypatch, capsys)
    assert status == 2
    assert re.search(
        r"has no auths entry for 127\.0\.0\.1:\d+ \(it has: index\.docker\.io\)", error
    )


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        pytest.param(
            {SHARD: {"io.deis.oras.content.unpack": "true"}},
            rf"layer {SHARD} is a directory packed as an archive",
            id="a directory pushed as an archive",
        ),
        pytest.param(
            {SHARD: {"org.opencontainers.image.title": ""}, "config.json": {}},
            None,
            id="untitled layers are not files",
        ),
    ],
)
def test_what_a_layer_is(
    annotations: dict[str, dict[str, str]],
    message: str | None,
    files: dict[str, bytes],
    registry: Registry,
    tmp_path: Path,
) -> None:
    registry.push(REPO, "odd", files, annotations)
    spec = f"oci://{registry.registry}/{REPO}:odd"
    if message:
        with pytest.raises(FetchError, match=message):
            fetch_oci(spec, tmp_path / "abc")
        return
    fetch_oci(spec, tmp_path / "abc")
    assert not (tmp_path / "abc" / SHARD).exists() and (tmp_path / "abc" / "config.json").exists()


def test_an_artifact_without_titled_layers_is_not_a_model(
    registry: Registry, tmp_path: Path
) -> None:
    registry.push(REPO, "empty", {})
    with pytest.raises(
        FetchError, match=r"has no layer annotated org\.opencontainers\.image\.title"
    ):
        fetch_oci(f"oci://{registry.registry}/{REPO}:empty", tmp_path / "abc")


def test_the_manifest_digest_is_checked_against_the_one_asked_for(
    registry: Registry, tmp_path: Path
) -> None:
    repo = registry.repositories[REPO]
    digest = repo.tags["v1"]
    repo.manifests[digest] = repo.manifests[digest].replace(b"  ", b" ")  # other bytes
    with pytest.raises(
        FetchError, match=rf"served a manifest whose digest is sha256:\w+, not {digest}"
    ):
        fetch_oci(f"oci://{registry.registry}/{REPO}@{digest}", tmp_path / "abc")
    assert digest_of(repo.manifests[digest]) != digest
