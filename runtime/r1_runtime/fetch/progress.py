"""Progress for `kubectl logs`: whole lines (no carriage returns), one every few seconds
while bytes flow, plus one per finished file."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

PREFIX = "r1-runtime fetch:"


class Progress:
    """Counts the bytes of one fetch run; `total_bytes` is what this run downloads.
    Downloads in several threads share one."""

    def __init__(
        self,
        *,
        total_bytes: int,
        num_files: int,
        out: TextIO | None = None,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total_bytes = total_bytes
        self.num_files = num_files
        self.done_bytes = 0
        self.done_files = 0
        self._out = out or sys.stderr
        self._interval_s = interval_s
        self._clock = clock
        self._start = clock()
        self._last_line = self._start
        self._lock = threading.Lock()

    def log(self, message: str) -> None:
        log(message, self._out)

    def add(self, num_bytes: int, path: str) -> None:
        """`num_bytes` more of `path` arrived; a line when `interval_s` has passed."""
        with self._lock:
            self.done_bytes += num_bytes
            now = self._clock()
            if now - self._last_line < self._interval_s:
                return
            self._last_line = now
        self.log(f"{self.summary(now)}; {path}")

    def file_done(self, path: str, size: int) -> None:
        with self._lock:
            self.done_files += 1
            done = self.done_files
        self.log(f"{path} ({human_bytes(size)}) verified [{done}/{self.num_files}]")

    def summary(self, now: float | None = None) -> str:
        """`1.2 GiB / 4.5 GiB (26.7%), 212.3 MiB/s, ETA 16s`."""
        elapsed = max((now if now is not None else self._clock()) - self._start, 1e-9)
        rate = self.done_bytes / elapsed
        percent = 100.0 * self.done_bytes / self.total_bytes if self.total_bytes else 100.0
        left = self.total_bytes - self.done_bytes
        eta = human_duration(left / rate) if rate > 0 else "unknown"
        return (
            f"{human_bytes(self.done_bytes)} / {human_bytes(self.total_bytes)} ({percent:.1f}%), "
            f"{human_bytes(rate)}/s, ETA {eta}"
        )


def log(message: str, out: TextIO | None = None) -> None:
    """One line on stderr (or `out`), flushed: `r1-runtime fetch: <message>`."""
    print(f"{PREFIX} {message}", file=out or sys.stderr, flush=True)


def human_bytes(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num_bytes) < 1024:
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TiB"


def human_duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
