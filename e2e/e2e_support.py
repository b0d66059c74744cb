"""What the real-cluster suite needs: its settings (from the environment), kubectl, waiting,
a port-forward, and the operator installed one of three ways. Everything goes through
`kubectl` (and `helm` when installed), as a platform engineer would run it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import selectors
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "crds" / "deepseekdeployments.yaml"
CHART = ROOT / "charts" / "r1-operator"
FIELD_MANAGER = "r1-e2e"
CHILD_KINDS = (
    "deployments.apps",
    "leaderworkersets.leaderworkerset.x-k8s.io",
    "services",
    "configmaps",
    "networkpolicies.networking.k8s.io",
    "poddisruptionbudgets.policy",
    "horizontalpodautoscalers.autoscaling",
    "persistentvolumeclaims",
)
T = TypeVar("T")
Obj = dict[str, Any]


def skip_reason() -> str | None:
    """Why the suite cannot run here, or None when it can."""
    if os.environ.get("R1_E2E") != "1":
        return "real-cluster suite: set R1_E2E=1 and point KUBECONFIG at a cluster (docs/e2e.md)"
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if not in_cluster and not any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p):
        return "R1_E2E=1 but no cluster: no kubeconfig file (KUBECONFIG, ~/.kube/config), no pod"
    if shutil.which("kubectl") is None:
        return "R1_E2E=1 but kubectl is not on PATH"
    return None


@dataclass(frozen=True)
class Settings:
    """The suite's knobs; docs/e2e.md lists them with examples."""

    example: Path
    namespace: str
    operator: str  # local | chart | installed
    operator_image: str | None
    runtime_image: str | None
    storage_class: str | None
    gpu_product: str | None
    ready_timeout: float
    scale_to: int
    keep: bool

    @classmethod
    def from_environment(cls) -> Settings:
        env = os.environ.get
        operator = env("R1_E2E_OPERATOR", "local")
        if operator not in ("local", "chart", "installed"):
            raise ValueError(f"R1_E2E_OPERATOR={operator!r}: use local, chart or installed")
        example = ROOT / env("R1_E2E_EXAMPLE", "examples/cpu-demo.yaml")
        if not example.is_file():
            raise ValueError(f"R1_E2E_EXAMPLE: no file {example}")
        return cls(
            example=example,
            namespace=env("R1_E2E_NAMESPACE", "r1-e2e"),
            operator=operator,
            operator_image=env("R1_E2E_OPERATOR_IMAGE"),
            runtime_image=env("R1_E2E_RUNTIME_IMAGE"),
            storage_class=env("R1_E2E_STORAGE_CLASS"),
            gpu_product=env("R1_E2E_GPU_PRODUCT"),
            ready_timeout=float(env("R1_E2E_READY_TIMEOUT", "1800")),
            scale_to=int(env("R1_E2E_SCALE_TO", "2")),
            keep=env("R1_E2E_KEEP") == "1",
        )


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run kubectl; its stdout, or an AssertionError with the command and its stderr."""
    result = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def get(kind: str, namespace: str, name: str) -> Obj | None:
    out = kubectl("-n", namespace, "get", kind, name, "-o", "json", "--ignore-not-found")
    return json.loads(out) if out.strip() else None


def apply(objects: list[Obj], namespace: str | None = None) -> None:
    """Server-side apply, as Argo CD with ServerSideApply=true would."""
    where = ["-n", namespace] if namespace else []
    text = yaml.safe_dump_all(objects, sort_keys=False)
    kubectl(
        *where, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=text
    )


def wait_for(
    check: Callable[[], T], timeout: float, what: str, show: Callable[[], Any] | None = None
) -> T:
    """Poll `check` every 2 s until it returns something truthy; fail after `timeout` s."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(2)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}; last: {show() if show else last!r}"
    )


def children(namespace: str, name: str) -> list[str]:
    """`kind/name` of every object labelled as a child of DeepSeekDeployment `name`, except
    claims the operator keeps on purpose (label r1-operator.dev/retain=true)."""
    selector = f"r1-operator.dev/deployment={name},r1-operator.dev/retain!=true"
    found = []
    for kind in CHILD_KINDS:
        out = kubectl("-n", namespace, "get", kind, "-l", selector, "-o", "name", check=False)
        found += out.split()
    return found


@contextlib.contextmanager
def port_forward(namespace: str, service: str, port: int) -> Iterator[str]:
    """`kubectl port-forward svc/...` on a free local port; yields `http://127.0.0.1:PORT`."""
    process = subprocess.Popen(
        ["kubectl", "-n", namespace, "port-forward", f"svc/{service}", f":{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            started = selector.select(timeout=60)
        line = process.stdout.readline() if started else ""
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not match:
            process.kill()
            raise AssertionError(
                f"port-forward did not start in 60 s: {line}{process.stderr.read()}"
            )
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        process.terminate()
        process.wait(10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def operator_running(settings: Settings) -> Iterator[None]:
    """The CRD installed and an operator watching `settings.namespace`, for the block."""
    if settings.operator == "installed":
        yield
        return
    if settings.operator == "chart":
        install_chart(settings)
        yield
        return
    kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRD))
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    command = [sys.executable, "-m", "r1_operator.cli", "run", "--namespace", settings.namespace]
    env = os.environ | {"R1_OPERATOR_METRICS_PORT": "0"}
    process = subprocess.Popen([*command, "--liveness", liveness], env=env)
    try:
        yield
    finally:
        process.terminate()
        process.wait(30)


def install_chart(settings: Settings) -> None:
    """`helm upgrade --install` when helm is on PATH; else the chart rendered by Helm's own
    engine (helm-python-sdk) and server-side applied, its CRDs first."""
    values: Obj = {}
    if settings.operator_image:
        repository, _, tag = settings.operator_image.rpartition(":")
        values["image"] = {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}
    if shutil.which("helm"):
        subprocess.run(
            [
                "helm",
                "upgrade",
                "--install",
                "r1-operator",
                str(CHART),
                "--namespace",
                "r1-system",
                "--create-namespace",
                "--wait",
                "-f",
                "-",
            ],
            input=yaml.safe_dump(values),
            text=True,
            check=True,
        )
        return
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        crds = [obj for crd in chart.crds for obj in yaml.safe_load_all(crd["data"]) if obj]
        rendered = chart.render(values, name="r1-operator", namespace="r1-system")
    objects = [
        obj
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for obj in yaml.safe_load_all(text)
        if obj
    ]
    apply(crds)
    kubectl("create", "namespace", "r1-system", check=False)
    apply(objects, namespace="r1-system")
    kubectl("-n", "r1-system", "rollout", "status", "deployment/r1-operator", "--timeout=300s")


def random_api_key() -> str:
    return f"sk-e2e-{secrets.token_urlsafe(24)}"
