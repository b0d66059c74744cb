"""The audit log's hash chain: an intact log verifies, every kind of tampering is caught at
the line where it happened, and a restart continues the chain."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from r1_runtime.cli import main
from r1_runtime.security.audit import GENESIS, AuditLog, audit_path, verify


def write_log(path: Path, num_entries: int, first: int = 0) -> None:
    log = AuditLog(path)
    for index in range(first, first + num_entries):
        log.record({"request_id": f"r{index}", "status": 200, "completion_tokens": index})
    log.close()


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = audit_path(tmp_path / "logs", "pod-0")
    write_log(path, 5)
    return path


def test_an_intact_log_verifies(log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [json.loads(line) for line in lines_of(log_path)]
    assert [line["request_id"] for line in lines] == ["r0", "r1", "r2", "r3", "r4"]
    assert lines[0]["prev"] == GENESIS
    assert all(line["prev"] == before["hash"] for before, line in pairwise(lines))
    assert verify(log_path).is_intact
    assert main(["verify-audit", str(log_path)]) == 0
    assert f"{log_path}: 5 lines intact; chain head {lines[-1]['hash']}" in capsys.readouterr().out


def modify(lines: list[bytes]) -> list[bytes]:
    entry = json.loads(lines[2])
    entry["status"] = 500
    return [*lines[:2], json.dumps(entry).encode() + b"\n", *lines[3:]]


def modify_and_rehash(lines: list[bytes]) -> list[bytes]:
    from r1_runtime.security.audit import canonical, seal

    entry = json.loads(lines[2])
    entry["completion_tokens"] = 0
    resealed = seal({k: v for k, v in entry.items() if k not in ("prev", "hash")}, entry["prev"])
    return [*lines[:2], canonical(resealed) + b"\n", *lines[3:]]


TAMPERING: list[tuple[str, Callable[[list[bytes]], list[bytes]], int, str]] = [
    ("a field changed", modify, 3, "the line was modified"),
    ("a field changed and the line's hash recomputed", modify_and_rehash, 4, "deleted, inserted"),
    ("a line deleted", lambda lines: lines[:2] + lines[3:], 3, "deleted, inserted or reordered"),
    ("two lines swapped", lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], 2, "reordered"),
    ("a line inserted", lambda lines: [*lines[:2], lines[1], *lines[2:]], 3, "inserted"),
    ("the last line cut short", lambda lines: [*lines[:4], lines[4][:40]], 5, "truncated"),
    (
        "a line cut short mid-file",
        lambda lines: [lines[0], lines[1][:40] + b"\n", *lines[2:]],
        2,
        "not a JSON object",
    ),
]


@pytest.mark.parametrize(
    ("tamper", "bad_line", "problem"),
    [pytest.param(tamper, line, problem, id=name) for name, tamper, line, problem in TAMPERING],
)
def test_tampering_is_caught_at_its_line(
    log_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[list[bytes]], list[bytes]],
    bad_line: int,
    problem: str,
) -> None:
    log_path.write_bytes(b"".join(tamper(lines_of(log_path))))
    result = verify(log_path)
    assert (result.bad_line, result.num_lines) == (bad_line, bad_line - 1)
    assert problem in (result.problem or "")
    assert main(["verify-audit", str(log_path)]) == 1
    assert f"{log_path}:{bad_line}: " in capsys.readouterr().err


def test_a_restart_continues_the_chain(log_path: Path) -> None:
    write_log(log_path, 3, first=5)
    lines = [json.loads(line) for line in lines_of(log_path)]
    assert len(lines) == 8 and lines[5]["prev"] == lines[4]["hash"]
    assert verify(log_path).num_lines == 8 and verify(log_path).is_intact


def test_a_restart_after_a_crash_mid_line_keeps_the_evidence(log_path: Path) -> None:
    whole = log_path.read_bytes()
    with log_path.open("ab") as file:
        file.write(b'{"request_id": "r5", "sta')
    write_log(log_path, 2, first=6)
    lines = lines_of(log_path)
    assert lines[:5] == whole.splitlines(keepends=True)
    assert json.loads(lines[6])["prev"] == json.loads(lines[4])["hash"]
    result = verify(log_path)
    assert (result.bad_line, result.num_lines) == (6, 5)


def test_entries_from_many_threads_form_one_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")

    def record(thread: int) -> None:
        for index in range(200):
            log.record({"request_id": f"t{thread}-{index}"})

    threads = [threading.Thread(target=record, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    result = verify(tmp_path / "audit.jsonl")
    assert result.is_intact and result.num_lines == 800


def test_the_log_lives_in_the_pods_directory(tmp_path: Path) -> None:
    assert audit_path(tmp_path, "r1-0") == tmp_path / "r1-0" / "audit.jsonl"
    assert audit_path(tmp_path, None) == tmp_path / "local" / "audit.jsonl"


def test_verify_audit_on_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["verify-audit", str(tmp_path / "nope.jsonl")]) == 2
