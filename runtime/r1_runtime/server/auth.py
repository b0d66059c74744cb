"""API keys: from a file (a Kubernetes Secret mount, re-read when it changes) and from the
environment; a request's bearer token is compared with every key in constant time."""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

Signature = tuple[int, int, int]  # inode, mtime in ns, size: a Secret update changes one


class APIKeys:
    """The accepted keys. With neither a file nor keys, `is_enabled` is False and every request
    passes; with a file that holds no key, every request is refused (fail closed)."""

    def __init__(self, path: Path | None = None, static_keys: tuple[str, ...] = ()) -> None:
        self._path = path
        self._static = tuple(key.encode() for key in static_keys)
        self._from_file: tuple[bytes, ...] = ()
        self._signature: Signature | None = None
        if path is not None:
            self._reload_if_changed()

    @property
    def is_enabled(self) -> bool:
        return self._path is not None or bool(self._static)

    def verify(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header value carries an accepted bearer token."""
        if not self.is_enabled:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        self._reload_if_changed()
        candidate = token.strip().encode()
        # NOTE: no early exit: the time taken does not say which key, if any, came close.
        matched = False
        for key in self._static + self._from_file:
            matched |= hmac.compare_digest(candidate, key)
        return matched

    def _reload_if_changed(self) -> None:
        if self._path is None:
            return
        try:
            stat = os.stat(self._path)  # follows the Secret mount's ..data symlink
            signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if signature == self._signature:
                return
            keys = _parse(self._path.read_text(encoding="utf-8"))
        except OSError as error:  # mid-update or removed: keep the keys we have
            logger.warning("cannot read API keys from %s: %s", self._path, error)
            return
        self._from_file, self._signature = keys, signature
        logger.info("loaded %d API key(s) from %s", len(keys), self._path)


def _parse(text: str) -> tuple[bytes, ...]:
    return tuple(line.strip().encode() for line in text.splitlines() if line.strip())
