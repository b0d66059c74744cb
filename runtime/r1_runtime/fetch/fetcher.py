"""`fetch(source, dest)`: make `dest` a complete, verified copy of the source, downloading
only what is missing, once across all the pods that share the hot tier."""

from __future__ import annotations

import errno
import functools
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO, TypeVar

from r1_runtime.fetch import store
from r1_runtime.fetch.digest import mismatch_of
from r1_runtime.fetch.download import RetryPolicy, download, partial_bytes
from r1_runtime.fetch.errors import FetchError, RetryableError
from r1_runtime.fetch.http import HttpClient
from r1_runtime.fetch.listing import Listing, RemoteFile
from r1_runtime.fetch.progress import Progress, human_bytes, log
from r1_runtime.file_lock import FileLock

T = TypeVar("T")
SPACE_HINT = "grow the hot tier (spec.storage.hot.size) or free space on it"


class Source(Protocol):
    """Where the weights come from (`HubSource`, `WebSource`, `S3Source`, `OciSource`)."""

    @property
    def spec(self) -> str: ...
    @property
    def revision(self) -> str | None: ...
    def client(self) -> HttpClient: ...
    def list(self, client: HttpClient) -> Listing: ...
    def file_url(self, commit: str, file: RemoteFile) -> str: ...


@dataclass(frozen=True, kw_only=True)
class Options:
    """How the fetch behaves; the defaults are the init container's."""

    max_workers: int = 8  # files downloaded at once: one stream rarely fills the link
    progress_interval_s: float = 5.0
    lock_poll_s: float = 0.5
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, kw_only=True)
class FetchResult:
    commit: str
    num_files: int
    num_bytes: int
    downloaded_files: int
    downloaded_bytes: int


def fetch(
    source: Source, dest: Path, *, out: TextIO | None = None, options: Options | None = None
) -> FetchResult:
    """Make `dest` a complete copy of `source` and write its marker last.

    Returns at once, without network, when the marker is for the same source and revision
    and no file's size or mtime changed since. Otherwise takes the lock next to `dest`
    (waiting while another fetcher holds it), then verifies what is there and downloads
    the rest. Raises FetchError (or UsageError) with a one-line message.
    """
    options = options or Options()
    layout = store.Layout(dest.absolute())
    say = functools.partial(log, out=out)
    if (done := _complete(layout, source)) is not None:
        say(f"{layout.dest} already holds {source.spec} at {done.listing.commit}: nothing to do")
        return _result(done.listing, downloaded=[])
    try:
        layout.dest.parent.mkdir(parents=True, exist_ok=True)
        waiting = functools.partial(_say_waiting, say)
        with FileLock(layout.lock_path, waiting, poll_s=options.lock_poll_s):
            if (done := _complete(layout, source)) is not None:
                say(f"another fetcher completed {layout.dest} ({done.listing.commit})")
                return _result(done.listing, downloaded=[])
            return _fetch_locked(source, layout, out, options)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FetchError(
                f"disk full: no space left under {layout.dest.parent}: {SPACE_HINT}"
            ) from None
        raise FetchError(f"{error.strerror or error} ({error.filename or layout.dest})") from None


def _say_waiting(say: Callable[[str], None], holder: str) -> None:
    say(f"waiting for the download by {holder} to finish")


def _complete(layout: store.Layout, source: Source) -> store.Marker | None:
    marker = store.read_marker(layout)
    if (
        marker
        and marker.is_for(source.spec, source.revision)
        and not marker.changed_files(layout.dest)
    ):
        return marker
    return None


def _fetch_locked(
    source: Source, layout: store.Layout, out: TextIO | None, options: Options
) -> FetchResult:
    say = functools.partial(log, out=out)
    marker = store.read_marker(layout)
    client: HttpClient | None = None
    if marker and marker.is_for(source.spec, source.revision):
        listing, suspects = marker.listing, marker.changed_files(layout.dest)
        names = ", ".join(file.path for file in suspects)
        say(f"changed since the copy was verified: {names}; checking them")
    else:
        client = lister = source.client()
        say(f"listing {source.spec}" + (f" at {source.revision}" if source.revision else ""))
        listing = _with_retries(lambda: source.list(lister), options.retry, say)
        suspects = list(listing.files)
    store.remove_marker(layout)
    store.prepare_staging(layout, listing.commit)
    missing = _missing(layout, suspects, say)
    if missing:
        client = client or source.client()
        _download_all(source, client, layout, listing.commit, missing, out, options)
    store.publish(layout, source.spec, source.revision, listing)
    size = sum(file.size for file in missing)
    say(
        f"{layout.dest} holds {source.spec} at {listing.commit}; "
        f"{len(missing)} file(s), {human_bytes(size)} downloaded"
    )
    return _result(listing, downloaded=missing)


def _missing(
    layout: store.Layout, suspects: list[RemoteFile], say: Callable[[str], None]
) -> list[RemoteFile]:
    """The suspects that neither `dest` (verified now) nor staging (verified when staged)
    holds intact."""
    missing = []
    present = [file for file in suspects if (layout.dest / file.path).exists()]
    if present:
        size = human_bytes(sum(file.size for file in present))
        say(f"verifying {len(present)} file(s), {size}, already in {layout.dest}")
    for file in suspects:
        in_dest, staged = layout.dest / file.path, layout.staging / file.path
        if staged.exists() and staged.stat().st_size == file.size:
            continue
        if in_dest.exists():
            problem = mismatch_of(in_dest, file)
            if problem is None:
                continue
            say(f"{in_dest} is corrupt ({problem}): downloading it again")
        missing.append(file)
    return missing


def _download_all(
    source: Source,
    client: HttpClient,
    layout: store.Layout,
    commit: str,
    files: list[RemoteFile],
    out: TextIO | None,
    options: Options,
) -> None:
    resumed = sum(partial_bytes(layout.staging / file.path) for file in files)
    total = sum(file.size for file in files) - resumed
    _check_space(layout.staging, total)
    progress = Progress(
        total_bytes=total, num_files=len(files), out=out, interval_s=options.progress_interval_s
    )
    progress.log(
        f"downloading {len(files)} file(s), {human_bytes(total)}"
        + (f" ({human_bytes(resumed)} resumed)" if resumed else "")
    )
    stop = threading.Event()
    largest_first = sorted(files, key=lambda file: -file.size)
    with ThreadPoolExecutor(options.max_workers, thread_name_prefix="r1-fetch") as pool:
        futures = [
            pool.submit(
                download,
                client,
                source.file_url(commit, file),
                file,
                layout.staging / file.path,
                progress,
                options.retry,
                stop,
            )
            for file in largest_first
        ]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            stop.set()  # the other downloads end at their next chunk; their .part files stay
            raise
    progress.log(f"downloaded {progress.summary()}")


def _check_space(directory: Path, needed: int) -> None:
    free = _free_bytes(directory)
    if needed > free:
        raise FetchError(
            f"disk full: the download needs {human_bytes(needed)} more under {directory.parent}, "
            f"{human_bytes(free)} is free: {SPACE_HINT}"
        )


def _free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def _with_retries(call: Callable[[], T], retry: RetryPolicy, say: Callable[[str], None]) -> T:
    for attempt in range(1, retry.max_attempts + 1):
        try:
            return call()
        except RetryableError as error:
            if attempt == retry.max_attempts:
                raise FetchError(f"{error} (gave up after {attempt} attempts)") from None
            say(f"{error}; retry {attempt}/{retry.max_attempts - 1}")
            retry.sleep(attempt)
    raise AssertionError("unreachable")


def _result(listing: Listing, downloaded: list[RemoteFile]) -> FetchResult:
    return FetchResult(
        commit=listing.commit,
        num_files=len(listing.files),
        num_bytes=listing.num_bytes,
        downloaded_files=len(downloaded),
        downloaded_bytes=sum(file.size for file in downloaded),
    )
