"""The audit log: one JSON line per finished API request, hash-chained.

Each line is an entry plus `prev` (the previous line's `hash`; `GENESIS` for the first line)
and `hash`: the sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of everything
else on the line. Changing, deleting, inserting or reordering a line breaks the chain at that
line; `verify` finds the first break. A restart continues the chain from the file's last line.

One writer thread owns the file: the event loop only puts entries on a queue. The writer
takes what has queued up, writes it and calls fsync once for the batch (group commit): a
request never waits for the disk, and under load one fsync covers many lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
FILE_NAME = "audit.jsonl"
_CLOSE = object()


def audit_path(log_dir: Path, hostname: str | None) -> Path:
    """`<log_dir>/<hostname or 'local'>/audit.jsonl`, beside the pod's runtime.log."""
    return log_dir / (hostname or "local") / FILE_NAME


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal(entry: dict[str, Any], prev: str) -> dict[str, Any]:
    """The line for `entry` after the line whose hash is `prev`."""
    body = {**entry, "prev": prev}
    return {**body, "hash": hashlib.sha256(canonical(body)).hexdigest()}


class AuditLog:
    """Appends entries to `path` from one writer thread, continuing the file's chain.

    `record` never blocks. `close` writes what is queued, then stops the thread.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._prev = _chain_head(path)
        self._file = path.open("ab")
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        logger.info("audit log %s: the chain continues from %s", path, self._prev)

    def record(self, entry: dict[str, Any]) -> None:
        self._queue.put(entry)

    def close(self) -> None:
        self._queue.put(_CLOSE)
        self._thread.join()
        self._file.close()
        logger.info("audit log %s closed; chain head %s", self.path, self._prev)

    def _run(self) -> None:
        is_open = True
        while is_open:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            is_open = _CLOSE not in batch
            entries = [item for item in batch if isinstance(item, dict)]
            try:
                self._write(entries)
            except OSError:
                logger.exception("cannot write %d audit entries to %s", len(entries), self.path)

    def _write(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        lines = []
        prev = self._prev
        for entry in entries:
            line = seal(entry, prev)
            lines.append(canonical(line) + b"\n")
            prev = line["hash"]
        self._file.write(b"".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._prev = prev


def _chain_head(path: Path) -> str:
    """The hash a new line must carry as `prev`: the last line's, or `GENESIS`.

    A last line cut short (a crash mid-write) is ended with a newline and left as it is:
    `verify` will name it. The chain continues from the last whole line before it.
    """
    if not path.exists() or path.stat().st_size == 0:
        return GENESIS
    lines = _tail_lines(path)
    if not lines[-1].endswith(b"\n"):
        logger.warning("%s ends in a partial line (a crash while writing?); kept as is", path)
        with path.open("ab") as file:
            file.write(b"\n")
        lines = lines[:-1]
    for line in reversed(lines):
        head = _hash_of(line)
        if head is not None:
            return head
        logger.warning("%s: a line at the end is not an audit entry; chained past it", path)
    return GENESIS


def _hash_of(line: bytes) -> str | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    value = entry.get("hash") if isinstance(entry, dict) else None
    return value if isinstance(value, str) and len(value) == 64 else None


def _tail_lines(path: Path, block: int = 1 << 16) -> list[bytes]:
    """The last two lines of `path` (or fewer), each with its newline if it has one."""
    with path.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        data = b""
        while size > 0 and data.count(b"\n") < 3:
            step = min(block, size)
            size -= step
            file.seek(size)
            data = file.read(step) + data
    return data.splitlines(keepends=True)[-2:]


@dataclass(frozen=True)
class Verification:
    """`bad_line` (1-based) and `problem` are None when the whole chain is intact."""

    num_lines: int
    head: str
    bad_line: int | None = None
    problem: str | None = None

    @property
    def is_intact(self) -> bool:
        return self.bad_line is None


def verify(path: Path) -> Verification:
    """Check the chain from the first line; stop at the first line that breaks it.

    NOTE: lines removed from the end leave an intact, shorter chain. Compare `head` with one
    recorded elsewhere (the runtime log notes it at shutdown) to notice that.
    """
    prev = GENESIS
    count = 0
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            problem = _problem(line, prev)
            if problem is not None:
                return Verification(count, prev, bad_line=number, problem=problem)
            prev = json.loads(line)["hash"]
            count += 1
    return Verification(count, prev)


def _problem(line: bytes, prev: str) -> str | None:
    if not line.endswith(b"\n"):
        return "the line is cut short (truncated)"
    try:
        entry = json.loads(line)
    except ValueError:
        return "not a JSON object (truncated or modified)"
    if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
        return "not an audit entry (no hash)"
    claimed = entry.pop("hash")
    if entry.get("prev") != prev:
        return (
            "its prev is not the hash of the line before: "
            "a line was deleted, inserted or reordered here"
        )
    if hashlib.sha256(canonical(entry)).hexdigest() != claimed:
        return "its hash does not match its content: the line was modified"
    return None
