"""One file into the staging directory: `<path>.part` grows (resuming with a Range request
after a dropped connection or a killed fetcher), is verified, then renamed to `<path>`."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from r1_runtime.fetch.digest import CHUNK_BYTES, Digests
from r1_runtime.fetch.errors import FetchError, HttpStatusError, RetryableError
from r1_runtime.fetch.http import TRANSIENT_ERRORS, HttpClient, Response
from r1_runtime.fetch.listing import RemoteFile
from r1_runtime.fetch.progress import Progress


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Attempts in a row that bring no byte before giving up, and the backoff between them."""

    max_attempts: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def sleep(self, attempt: int) -> None:
        time.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))


def part_path(staged: Path) -> Path:
    return staged.with_name(staged.name + ".part")


def partial_bytes(staged: Path) -> int:
    """Bytes already downloaded towards `staged` (the size of its `.part`)."""
    try:
        return part_path(staged).stat().st_size
    except OSError:
        return 0


def download(
    client: HttpClient,
    url: str,
    file: RemoteFile,
    staged: Path,
    progress: Progress,
    retry: RetryPolicy,
    stop: threading.Event | None = None,
) -> None:
    """Download `url` to `staged`, verified against `file`'s size and digests. Setting
    `stop` (another download failed) ends it at the next chunk, its `.part` kept.

    A digest mismatch discards the bytes and downloads once more from byte 0 (a partial
    file from elsewhere may have been wrong); a second mismatch is a FetchError.
    """
    part = part_path(staged)
    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        digests = _download_part(
            client, url, file, part, progress, retry, stop or threading.Event()
        )
        mismatch = digests.mismatch()
        if mismatch is None:
            os.replace(part, staged)
            progress.file_done(file.path, file.size)
            return
        part.unlink()
        if attempt == 1:
            progress.log(f"{file.path}: downloaded bytes do not match ({mismatch}); again from 0")
    raise FetchError(
        f"{file.path} from {url} does not match its listed digest ({mismatch}): "
        "the source serves other bytes than it lists"
    )


def _download_part(
    client: HttpClient,
    url: str,
    file: RemoteFile,
    part: Path,
    progress: Progress,
    retry: RetryPolicy,
    stop: threading.Event,
) -> Digests:
    digests = Digests(file)
    with part.open("ab") as stream:
        offset = stream.tell()
        if offset > file.size:
            offset = _restart(stream)
        digests.update_from(part, offset)
        failures = 0
        while offset < file.size:
            try:
                response = client.open(url, offset)
            except HttpStatusError as error:
                if error.status != 416:
                    raise
                offset, digests = _restart(stream), Digests(file)  # our part is not theirs
                continue
            except RetryableError as error:
                failures = _failed(failures, retry, progress, f"{file.path}: {error}")
                continue
            if offset and response.status == 200:
                progress.log(f"{file.path}: the server ignores Range requests; from byte 0")
                offset, digests = _restart(stream), Digests(file)
            received = _copy(response, stream, digests, file, progress, stop)
            offset += received
            if offset < file.size:
                reason = f"{file.path}: connection ended at byte {offset} of {file.size}"
                failures = 0 if received else _failed(failures, retry, progress, reason)
                if received:
                    progress.log(f"{reason}; resuming")
        stream.flush()
        os.fsync(stream.fileno())
    return digests


def _copy(
    response: Response,
    stream: BinaryIO,
    digests: Digests,
    file: RemoteFile,
    progress: Progress,
    stop: threading.Event,
) -> int:
    """Append the body to `stream` up to the file's size; the bytes copied."""
    received = 0
    left = file.size - response.offset
    with response.body as body:
        while left > 0:
            if stop.is_set():
                raise FetchError(f"{file.path}: stopped, another download failed")
            try:
                chunk = body.read1(min(CHUNK_BYTES, left))
            except TRANSIENT_ERRORS:
                break
            if not chunk:
                break
            stream.write(chunk)
            digests.update(chunk)
            received += len(chunk)
            left -= len(chunk)
            progress.add(len(chunk), file.path)
    return received


def _restart(stream: BinaryIO) -> int:
    stream.seek(0)
    stream.truncate()
    return 0


def _failed(failures: int, retry: RetryPolicy, progress: Progress, reason: str) -> int:
    failures += 1
    if failures >= retry.max_attempts:
        raise FetchError(f"{reason} (gave up after {failures} attempts)")
    progress.log(f"{reason}; retry {failures}/{retry.max_attempts - 1}")
    retry.sleep(failures)
    return failures
