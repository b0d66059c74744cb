"""`fetch` from a hub-like server: complete and byte-identical, a no-op when complete,
resumes a dropped download with a Range request, re-fetches a corrupted file."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from r1_runtime.fetch import MARKER_NAME, FetchError

from .conftest import FetchInto
from .hub_server import COMMIT, HubServer

WEIGHTS = "model.safetensors"


def assert_same_files(dest: Path, model: Path) -> None:
    expected = {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()}
    assert {p.name for p in dest.iterdir() if p.name != MARKER_NAME} == expected
    for name in expected:
        assert (dest / name).read_bytes() == (model / name).read_bytes(), name


def flip_a_byte(path: Path, offset: int = 4096) -> None:
    with path.open("r+b") as stream:
        stream.seek(offset)
        byte = stream.read(1)
        stream.seek(offset)
        stream.write(bytes([byte[0] ^ 0xFF]))


def test_first_fetch_downloads_every_file_once_byte_identical(
    hub: HubServer, fetch_into: FetchInto, demo_model_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "hf" / "org" / "demo" / "main"
    result, log = fetch_into(dest)
    assert_same_files(dest, demo_model_dir)
    assert sorted(len(hub.file_requests(path)) for path in hub.files) == [1] * len(hub.files)
    marker = json.loads((dest / MARKER_NAME).read_text())
    assert (marker["source"], marker["revision"], marker["commit"]) == (
        "hf://org/demo",
        "main",
        COMMIT,
    )
    assert {file["path"] for file in marker["files"]} == set(hub.files)
    assert result.downloaded_files == len(hub.files) and result.commit == COMMIT
    assert "\r" not in log and f"{WEIGHTS} (" in log
    assert not list(dest.parent.glob(".main.r1-fetch")), "the staging directory is gone"


def test_second_fetch_is_a_no_op_without_network(
    hub: HubServer, fetch_into: FetchInto, tmp_path: Path
) -> None:
    fetch_into(tmp_path / "main")
    before = len(hub.requests)
    result, log = fetch_into(tmp_path / "main")
    assert len(hub.requests) == before, "not even the API was asked"
    assert result.downloaded_files == 0 and "nothing to do" in log


def test_files_are_fetched_by_commit_and_the_token_never_reaches_the_cdn(
    hub: HubServer, fetch_into: FetchInto, tmp_path: Path
) -> None:
    fetch_into(tmp_path / "main")
    cdn = [request for request in hub.requests if request.path.startswith("/lfs/")]
    hub_side = [request for request in hub.requests if not request.path.startswith("/lfs/")]
    assert cdn and all(request.authorization is None for request in cdn)
    assert all(request.authorization == "Bearer hf_test_token" for request in hub_side)
    assert all(f"/resolve/{COMMIT}/" in r.path for r in hub_side if "/resolve/" in r.path)


def test_a_dropped_connection_resumes_with_a_range_request(
    hub: HubServer, fetch_into: FetchInto, demo_model_dir: Path, tmp_path: Path
) -> None:
    cut = 5_000_000
    hub.faults.drop_after[WEIGHTS] = cut
    _, log = fetch_into(tmp_path / "main")
    ranges = [request.range for request in hub.file_requests(WEIGHTS)]
    assert ranges == [None, f"bytes={cut}-"]
    assert f"connection ended at byte {cut}" in log
    assert_same_files(tmp_path / "main", demo_model_dir)


def test_a_corrupted_file_is_detected_and_fetched_again_alone(
    hub: HubServer, fetch_into: FetchInto, demo_model_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "main"
    fetch_into(dest)
    flip_a_byte(dest / WEIGHTS)
    before = len(hub.byte_requests())
    result, log = fetch_into(dest)
    assert len(hub.byte_requests()) - before == 1 and result.downloaded_files == 1
    assert "is corrupt (sha256" in log
    assert_same_files(dest, demo_model_dir)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(WEIGHTS, id="an LFS file checked by sha256"),
        pytest.param("config.json", id="a small file checked by git blob sha1"),
    ],
)
def test_without_the_marker_every_file_is_verified_and_only_bad_ones_fetched(
    name: str, hub: HubServer, fetch_into: FetchInto, demo_model_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "main"
    fetch_into(dest)
    stat = (dest / name).stat()
    flip_a_byte(dest / name, offset=10)
    os.utime(dest / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the stat alone looks intact
    (dest / MARKER_NAME).unlink()
    before = len(hub.byte_requests())
    result, _ = fetch_into(dest)
    assert result.downloaded_files == 1 and len(hub.byte_requests()) - before == 1
    assert_same_files(dest, demo_model_dir)
    assert (dest / MARKER_NAME).exists()


def test_a_missing_file_is_fetched_again(
    hub: HubServer, fetch_into: FetchInto, tmp_path: Path
) -> None:
    fetch_into(tmp_path / "main")
    (tmp_path / "main" / "tokenizer.json").unlink()
    result, _ = fetch_into(tmp_path / "main")
    assert result.downloaded_files == 1
    assert (tmp_path / "main" / "tokenizer.json").read_bytes() == hub.files["tokenizer.json"]


def test_a_full_disk_fails_before_downloading(
    hub: HubServer, fetch_into: FetchInto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from r1_runtime.fetch import fetcher

    monkeypatch.setattr(fetcher, "_free_bytes", lambda directory: 1 << 20)
    with pytest.raises(
        FetchError, match=r"disk full: the download needs 48\.5 MiB more .* 1\.0 MiB is free"
    ):
        fetch_into(tmp_path / "main")
    assert hub.byte_requests() == []
    assert not (tmp_path / "main").exists()


def test_running_out_of_space_mid_download_says_disk_full(
    hub: HubServer, fetch_into: FetchInto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from r1_runtime.fetch import download

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download.os, "fsync", full)
    with pytest.raises(
        FetchError, match=r"^disk full: no space left under .*spec\.storage\.hot\.size"
    ):
        fetch_into(tmp_path / "main")
    assert not (tmp_path / "main").exists()


def test_a_file_the_hub_lists_but_does_not_serve_fails_the_fetch_and_keeps_no_marker(
    hub: HubServer, fetch_into: FetchInto, tmp_path: Path
) -> None:
    hub.faults.not_served.add("tokenizer.json")
    with pytest.raises(FetchError, match=r"HTTP 404 \(EntryNotFound.*tokenizer\.json is listed"):
        fetch_into(tmp_path / "main")
    assert not (tmp_path / "main").exists()


def test_bytes_that_never_match_the_listed_digest_fail_after_a_second_try(
    hub: HubServer, fetch_into: FetchInto, tmp_path: Path
) -> None:
    hub.faults.corrupt.add("config.json")
    with pytest.raises(FetchError, match=r"config\.json .* does not match its listed digest"):
        fetch_into(tmp_path / "main")
    assert len(hub.file_requests("config.json")) == 2
    assert not (tmp_path / "main").exists()
