"""The engine store: each key is built once across processes, a killed builder leaves nothing
that could be loaded, a corrupt or partial entry is rebuilt, and readers never wait on a
builder."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from r1_runtime.engine_cache.manifest import MANIFEST
from r1_runtime.engine_cache.store import EngineStore, Resolved
from r1_runtime.file_lock import FileLock, read_holder

from .fakes import (
    ARTIFACT_BYTES,
    FileBackend,
    count_builds,
    make_key,
    start_worker,
    worker_result,
)

KEY, INPUTS = make_key()


@pytest.fixture
def store(tmp_path: Path) -> EngineStore:
    return EngineStore(tmp_path / "engines-cache", poll_s=0.05)


@pytest.fixture
def backend(tmp_path: Path) -> FileBackend:
    return FileBackend(tmp_path / "builds.log")


def get_or_build(store: EngineStore, backend: FileBackend, key: str = KEY) -> Resolved:
    return store.get_or_build(key, INPUTS, backend.build_or_load)


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_first_build_publishes_an_entry_with_its_manifest(
    store: EngineStore, backend: FileBackend
) -> None:
    resolved = get_or_build(store, backend)
    assert resolved.is_built and resolved.entry == store.root / KEY
    manifest = json.loads((resolved.entry / MANIFEST).read_text())
    assert manifest["key"] == KEY and manifest["inputs"] == INPUTS
    assert {file["path"]: file["size"] for file in manifest["files"]} == {
        "engine.bin": ARTIFACT_BYTES,
        "graphs/step.txt": len("compiled step\n"),
    }
    assert manifest["totalBytes"] == ARTIFACT_BYTES + 14 and manifest["buildSeconds"] >= 0
    assert list(store.temp_root.iterdir()) == []


def test_a_second_start_finds_the_entry_and_builds_nothing(
    store: EngineStore, backend: FileBackend
) -> None:
    first = get_or_build(store, backend)
    second = get_or_build(store, backend)
    assert (second.is_built, second.entry, second.manifest) == (False, first.entry, first.manifest)
    assert count_builds(backend.builds) == 1


@pytest.mark.slow
def test_two_processes_racing_build_once(store: EngineStore, tmp_path: Path) -> None:
    builds = tmp_path / "builds.log"
    workers = [start_worker(store.root, KEY, builds, build_seconds=1.0) for _ in range(2)]
    results = [worker_result(worker) for worker in workers]
    assert count_builds(builds) == 1
    assert sorted(result["isBuilt"] for result in results) == [False, True]
    waiter = next(result for result in results if not result["isBuilt"])
    assert waiter["lockWaitS"] > 0.3  # it found the entry after waiting for the builder
    assert store.lookup(KEY) is not None


@pytest.mark.slow
def test_a_killed_builder_leaves_no_entry_and_the_next_start_builds(
    store: EngineStore, backend: FileBackend
) -> None:
    worker = start_worker(store.root, KEY, backend.builds, build_seconds=60)
    wait_for(lambda: count_builds(backend.builds) == 1)  # mid-build, its lock held
    assert read_holder(store.lock_path(KEY))["pid"] == worker.pid
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    assert store.lookup(KEY) is None and not store.entry(KEY).exists()
    (leftover,) = store.temp_root.iterdir()
    assert (leftover / "graphs" / "step.txt").exists()

    resolved = get_or_build(store, backend)
    assert resolved.is_built and count_builds(backend.builds) == 2
    assert not leftover.exists()


def test_stale_temporary_directories_of_dead_builders_are_cleaned(
    store: EngineStore, backend: FileBackend
) -> None:
    other_key, _ = make_key(backend="other")
    dead = store.temp_root / f"{other_key}.999999.deadbeef"
    (dead / "graphs").mkdir(parents=True)
    live = store.temp_root / f"{KEY}.{os.getpid()}.cafef00d"
    live.mkdir()
    with FileLock(store.lock_path(KEY), print):  # a live builder of KEY
        assert store.clean_stale_temp() == [dead]
    assert live.exists() and not dead.exists()


def test_an_entry_published_meanwhile_without_the_lock_wins_over_a_second_build(
    store: EngineStore, backend: FileBackend
) -> None:
    # NOTE: what happens where the lock is node-local (an NFS mount with `nolock`): another
    # node builds and publishes while this one is building.
    other_node = EngineStore(store.root)

    def build_while_another_node_publishes(entry: Path) -> None:
        other_node._build(KEY, INPUTS, backend.build_or_load)
        backend.build_or_load(entry)

    resolved = store.get_or_build(KEY, INPUTS, build_while_another_node_publishes)
    assert resolved.is_built is False and count_builds(backend.builds) == 2
    assert store.lookup(KEY) == resolved.manifest
    assert list(store.temp_root.iterdir()) == []


def test_a_failed_build_leaves_nothing_behind(store: EngineStore) -> None:
    def broken(entry: Path) -> None:
        (entry / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        store.get_or_build(KEY, INPUTS, broken)
    assert not store.entry(KEY).exists()
    assert list(store.temp_root.iterdir()) == []


def truncate_artifact(entry: Path) -> None:
    (entry / "engine.bin").write_bytes(b"short")


def delete_artifact(entry: Path) -> None:
    (entry / "graphs" / "step.txt").unlink()


def delete_manifest(entry: Path) -> None:
    (entry / MANIFEST).unlink()


def garble_manifest(entry: Path) -> None:
    (entry / MANIFEST).write_text('{"key": ')


def manifest_of_another_key(entry: Path) -> None:
    manifest = json.loads((entry / MANIFEST).read_text())
    (entry / MANIFEST).write_text(json.dumps({**manifest, "key": "0" * 64}))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(truncate_artifact, id="an artifact shorter than its manifest says"),
        pytest.param(delete_artifact, id="an artifact missing"),
        pytest.param(delete_manifest, id="no manifest (a partial entry)"),
        pytest.param(garble_manifest, id="a manifest that does not parse"),
        pytest.param(manifest_of_another_key, id="a manifest for another key"),
    ],
)
def test_a_damaged_entry_is_never_loaded_and_is_rebuilt(
    store: EngineStore, backend: FileBackend, damage: Callable[[Path], None]
) -> None:
    entry = get_or_build(store, backend).entry
    damage(entry)
    assert store.lookup(KEY) is None
    resolved = get_or_build(store, backend)
    assert resolved.is_built and count_builds(backend.builds) == 2
    assert store.lookup(KEY) == resolved.manifest
    assert (entry / "engine.bin").stat().st_size == ARTIFACT_BYTES
    assert list(store.temp_root.iterdir()) == []


def test_reading_a_valid_entry_does_not_wait_for_a_builder_holding_the_lock(
    store: EngineStore, backend: FileBackend
) -> None:
    get_or_build(store, backend)
    with FileLock(store.lock_path(KEY), print):
        started = time.monotonic()
        assert store.lookup(KEY) is not None
        assert get_or_build(store, backend).is_built is False
        assert time.monotonic() - started < 0.5


def test_the_lock_records_its_holder_and_clears_the_record_on_release(
    store: EngineStore,
) -> None:
    path = store.lock_path(KEY)
    with FileLock(path, print, heartbeat_s=0.05):
        first = read_holder(path)
        wait_for(lambda: read_holder(path).get("heartbeat", 0) > first["heartbeat"])
        assert first["pid"] == os.getpid() and first["host"]
    assert read_holder(path) == {}


def test_a_waiter_is_told_who_holds_the_lock_and_gets_it_on_release(
    store: EngineStore,
) -> None:
    path = store.lock_path(KEY)
    waits: list[str] = []
    acquired = threading.Event()

    def wait_for_the_lock() -> None:
        with FileLock(path, waits.append, poll_s=0.01):
            acquired.set()

    with FileLock(path, print):
        waiter = threading.Thread(target=wait_for_the_lock)
        waiter.start()
        wait_for(lambda: bool(waits))
        assert not acquired.is_set()
    waiter.join(timeout=5)
    assert acquired.is_set()
    assert waits[0].startswith(f"pid {os.getpid()} on ")


def test_a_key_that_is_not_a_digest_is_refused(store: EngineStore) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        store.entry("../../etc")
