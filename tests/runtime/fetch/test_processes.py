"""`r1-runtime fetch` as the init container runs it: a killed fetcher's successor resumes
its partial file with a Range request; two fetchers on one volume download each file once."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from r1_runtime.fetch import MARKER_NAME

from .conftest import FetchInto
from .hub_server import HubServer
from .test_hub_fetch import WEIGHTS, assert_same_files

pytestmark = pytest.mark.slow

StartCli = Callable[[Path], subprocess.Popen[str]]


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def staging(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.r1-fetch"


def part_size(dest: Path) -> int:
    part = staging(dest) / f"{WEIGHTS}.part"
    return part.stat().st_size if part.exists() else 0


def test_a_killed_fetcher_leaves_no_marker_and_the_next_one_resumes_with_range(
    hub: HubServer, start_cli: StartCli, fetch_into: FetchInto, demo_model_dir: Path, tmp_path: Path
) -> None:
    dest, cut = tmp_path / "main", 20_000_000
    hub.faults.stall_after[WEIGHTS] = cut
    process = start_cli(dest)
    small = [path for path in hub.files if path != WEIGHTS]
    staged = lambda: all((staging(dest) / path).exists() for path in small)  # noqa: E731
    wait_for(lambda: hub.faults.stalled.is_set() and part_size(dest) == cut and staged())
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    hub.faults.release.set()
    assert not (dest / MARKER_NAME).exists()

    result, log = fetch_into(dest)
    assert [request.range for request in hub.file_requests(WEIGHTS)] == [None, f"bytes={cut}-"]
    assert "19.1 MiB resumed" in log
    assert result.downloaded_files == 1  # the small files were staged (verified) before the kill
    assert_same_files(dest, demo_model_dir)


def test_two_fetchers_on_one_volume_download_each_file_once(
    hub: HubServer, start_cli: StartCli, demo_model_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "main"
    hub.faults.stall_after[WEIGHTS] = 1_000_000
    first = start_cli(dest)
    wait_for(hub.faults.stalled.is_set)
    second = start_cli(dest)
    lock = tmp_path / ".main.r1-fetch.lock"
    time.sleep(1.0)  # the second one starts and finds the lock held
    hub.faults.release.set()
    outputs = [process.communicate(timeout=30) for process in (first, second)]

    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    assert f"waiting for the download by pid {first.pid}" in outputs[1][1]
    assert "another fetcher completed" in outputs[1][1]
    assert sorted(len(hub.file_requests(path)) for path in hub.files) == [1] * len(hub.files)
    assert len([r for r in hub.requests if r.path.startswith("/api/")]) == 1
    assert_same_files(dest, demo_model_dir)
    assert lock.exists()
