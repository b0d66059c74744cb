"""The real-cluster suite (e2e/) as far as it can be checked without a cluster: `make test`
does not collect it, it skips every test with a reason when no cluster is configured, and
the objects it would create are valid Kubernetes objects."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
E2E = ROOT / "e2e"


def run_e2e(*env: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **dict(env)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(E2E), "-rs", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        check=False,
    )


def test_make_test_does_not_collect_e2e() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["testpaths"] == ["tests"]


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        pytest.param((), "set R1_E2E=1", id="without R1_E2E every test is skipped"),
        pytest.param(
            (("R1_E2E", "1"), ("KUBECONFIG", "/nonexistent")),
            "no cluster",
            id="with R1_E2E but no kubeconfig every test is skipped",
        ),
    ],
)
def test_the_suite_skips_with_a_reason_without_a_cluster(
    env: tuple[tuple[str, str], ...], reason: str
) -> None:
    result = run_e2e(*env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b\d+ skipped in ", result.stdout), result.stdout
    assert reason in result.stdout and " passed" not in result.stdout, result.stdout


def test_the_demo_model_job_and_claim_validate_strictly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(E2E))  # e2e/conftest.py imports e2e_support
    spec = importlib.util.spec_from_file_location("e2e_conftest", E2E / "conftest.py")
    assert spec is not None and spec.loader is not None
    e2e_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(e2e_conftest)

    example = yaml.safe_load((ROOT / "examples" / "cpu-demo.yaml").read_text())
    job = e2e_conftest.demo_model_job(
        example, example["spec"]["model"]["source"]["pvc"]["claimName"]
    )
    kubernetes_validate.validate(job, kubernetes_validate.utils.latest_version(), strict=True)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:2] == [
        "r1-runtime",
        "demo-model",
    ]


@pytest.fixture
def e2e_support(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """e2e/e2e_support.py with a stand-in `kubectl` first on PATH, whose behaviour the test
    writes to tmp_path/kubectl.sh."""
    monkeypatch.syspath_prepend(str(E2E))
    (tmp_path / "kubectl").write_text('#!/bin/sh\nexec sh "$(dirname "$0")/kubectl.sh" "$@"\n')
    (tmp_path / "kubectl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    return importlib.import_module("e2e_support")


def test_port_forward_yields_the_local_port_kubectl_chose_and_stops_it(
    e2e_support: Any, tmp_path: Path
) -> None:
    pids = tmp_path / "pid"
    script = f'echo $$ > {pids}\necho "Forwarding from 127.0.0.1:43117 -> 8000"\nexec sleep 60\n'
    (tmp_path / "kubectl.sh").write_text(script)
    with e2e_support.port_forward("ns", "r1", 8000) as url:
        assert url == "http://127.0.0.1:43117"
        pid = int(pids.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_port_forward_that_fails_says_why(e2e_support: Any, tmp_path: Path) -> None:
    (tmp_path / "kubectl.sh").write_text('echo "error: services \\"r1\\" not found" >&2\nexit 1\n')
    forward = e2e_support.port_forward("ns", "r1", 8000)
    with pytest.raises(AssertionError, match='services "r1" not found'):
        forward.__enter__()
