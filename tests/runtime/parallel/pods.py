"""`r1-runtime serve` processes standing in for the pods of a LeaderWorkerSet group on
loopback: the command line and environment the operator renders, with what the kubelet and
the LWS controller substitute, and with the pod's mounts mapped to local directories."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..server.harness import wait_until

READY_TIMEOUT_S = 180


@dataclass
class Pod:
    process: subprocess.Popen[Any]
    base: str  # http://127.0.0.1:PORT
    log: Path

    def status(self, path: str) -> int | None:
        """The HTTP status of GET `path`; None while nothing listens."""
        try:
            return httpx.get(f"{self.base}{path}", timeout=5).status_code
        except httpx.TransportError:
            return None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}: {self.tail()}")
            return self.status("/ready") == 200

        wait_until(ready, timeout)

    def tail(self) -> str:
        return self.log.read_text()[-4000:]


def substitute(arg: str, variables: dict[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion."""
    return re.sub(r"\$\((\w+)\)", lambda match: variables[match.group(1)], arg)


@contextmanager
def running_pods(
    commands: list[tuple[list[str], dict[str, str], int]], logs: Path
) -> Iterator[list[Pod]]:
    """Start each (args after `r1-runtime`, environment, HTTP port) as a process; kill every
    one that is left at the end, with its local ranks (their process group)."""
    pods = []
    try:
        for index, (args, env, port) in enumerate(commands):
            log = logs / f"pod-{index}.log"
            process = subprocess.Popen(
                [sys.executable, "-m", "r1_runtime.cli", *args],
                env=os.environ | env,
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            pods.append(Pod(process, f"http://127.0.0.1:{port}", log))
        yield pods
    finally:
        for pod in pods:
            if pod.process.poll() is None:
                os.killpg(pod.process.pid, signal.SIGKILL)
            pod.process.wait(30)


def local_ranks(pod: Pod) -> list[int]:
    """The pids of a pod's local rank processes (its children)."""
    children = Path(f"/proc/{pod.process.pid}/task/{pod.process.pid}/children")
    pids = [int(pid) for pid in children.read_text().split()]
    return [pid for pid in pids if "spawn_main" in _cmdline(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
