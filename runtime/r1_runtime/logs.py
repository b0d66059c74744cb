"""The runtime's logging: to stderr and, with `--log-dir`, to LOG_DIR/$HOSTNAME/<file> on the
cold tier. One setup for `serve` and `build`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from r1_runtime.config import ConfigError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(log_dir: Path | None, file_name: str, *, required: bool) -> None:
    """Log to stderr and to `log_dir`/$HOSTNAME/`file_name`. A log file that cannot be written
    is a `ConfigError` naming `--log-dir` when `required`; otherwise only stderr is used (a
    log volume problem must not fail the pre-build Job)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_dir is not None:
        pod_dir = log_dir / os.environ.get("HOSTNAME", "local")
        try:
            pod_dir.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(pod_dir / file_name))
        except OSError as error:
            if required:
                raise ConfigError(
                    f"--log-dir {log_dir}: cannot write {pod_dir}: {error.strerror}; mount a "
                    "writable volume there (the cold tier)"
                ) from error
    logging.basicConfig(level=logging.INFO, format=FORMAT, handlers=handlers)
