"""A lock file that one process at a time holds, across every pod sharing a volume: the
engine cache's build lock (one builder per key) and the fetch's lock (one downloader per
destination).

`fcntl.flock` on the file. The kernel (or the NFS server) drops the lock when its holder
dies, however it dies, so a dead holder's lock is simply taken by the next one: no stale-lock
detection is needed. The holder writes who it is and a heartbeat into the file, for the
waiters' logs only.

NOTE: on NFS, Linux emulates flock with POSIX byte-range locks, which NFSv4 (and v3 with
lockd/NLM) enforce across clients; a mount with `nolock` (or `local_lock=all/flock`) keeps
locks local to each node and two nodes could build at once (still safe: each publishes
atomically and one rename wins, but the build is done twice). A node that dies while
holding the lock keeps it until the NFS server's lease expires (NFSv4: typically 90 s).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

logger = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
POLL_S = 0.5
WAIT_LOG_S = 30.0


class FileLock:
    """An exclusive lock on `path`, held for a `with` block. Waits as long as it takes, calling
    `on_wait` with who holds it (`describe_holder`) when it starts waiting and every
    `WAIT_LOG_S` seconds after."""

    def __init__(
        self,
        path: Path,
        on_wait: Callable[[str], None],
        *,
        heartbeat_s: float = HEARTBEAT_S,
        poll_s: float = POLL_S,
    ):
        self.path = path
        self.on_wait = on_wait
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.waited_s = 0.0  # how long acquiring took
        self._acquired = 0.0
        self._file: IO[str] | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # NOTE: "a" creates the file without truncating a holder's record; the lock file is
        # never unlinked, or a waiter could lock an inode a newer builder no longer uses.
        file = self.path.open("a+", encoding="utf-8")
        try:
            self.waited_s = self._acquire(file)
        except BaseException:
            file.close()
            raise
        self._file = file
        self._acquired = time.time()
        self._write_holder()
        self._heartbeat = threading.Thread(target=self._beat, name="file-lock", daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        assert self._file is not None
        self._file.truncate(0)
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def _acquire(self, file: IO[str]) -> float:
        started = next_log = time.monotonic()
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return time.monotonic() - started
            except BlockingIOError:
                pass
            if time.monotonic() >= next_log:
                self.on_wait(self.describe_holder())
                next_log += WAIT_LOG_S
            time.sleep(self.poll_s)

    def describe_holder(self) -> str:
        """Who holds the lock, from its file: for log lines."""
        holder = read_holder(self.path)
        if not holder:
            return "another process (not yet recorded)"
        age = time.time() - float(holder.get("heartbeat", 0))
        return f"pid {holder.get('pid')} on {holder.get('host')} (heartbeat {age:.0f} s ago)"

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._write_holder()

    def _write_holder(self) -> None:
        assert self._file is not None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "acquired": self._acquired,
            "heartbeat": time.time(),
        }
        try:
            self._file.seek(0)
            self._file.truncate(0)
            self._file.write(json.dumps(record))
            self._file.flush()
        except OSError as error:  # the record is informative only: never fail on it
            logger.warning("cannot write the lock record %s: %s", self.path, error)


def read_holder(path: Path) -> dict[str, Any]:
    """The holder record of a lock file; empty when unlocked, unreadable or half-written."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def try_lock(path: Path) -> IO[str] | None:
    """The open, locked file if nobody holds `path`'s lock now, else None. Close it to
    release. For housekeeping that must not wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    file = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        return None
    return file
