"""Failures end `r1-runtime fetch` with one line that says what to fix, and a non-zero
exit: 1 for a failed fetch, 2 for a flag the fetcher cannot honour."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from r1_runtime.cli import main

from .hub_server import HubServer


def run(
    argv: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str]:
    for name in ("HF_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status = main(["fetch", *argv])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) <= 1
    return status, errors[0] if errors else ""


@pytest.mark.parametrize(
    ("repo", "revision", "token", "message"),
    [
        pytest.param(
            "org/demo",
            "main",
            None,
            r"HTTP 401 \(Invalid credentials in Authorization header\): "
            r"org/demo needs a token .*no HF_TOKEN is set .*tokenSecretRef",
            id="no token for a private repo names HF_TOKEN and the Secret",
        ),
        pytest.param(
            "org/demo",
            "main",
            "wrong",
            r"HTTP 401 .*rejected HF_TOKEN for org/demo.*tokenSecretRef",
            id="a wrong token says it was rejected",
        ),
        pytest.param(
            "org/missing",
            "main",
            "hf_test_token",
            r"HTTP 404 \(RepoNotFound.*org/missing at revision 'main' not found",
            id="an unknown repo is not found",
        ),
        pytest.param(
            "org/demo",
            "v9",
            "hf_test_token",
            r"HTTP 404 \(RevisionNotFound.*revision 'v9' not found in org/demo.*--revision",
            id="an unknown revision names --revision",
        ),
    ],
)
def test_hub_errors_are_one_line_that_says_what_to_fix(
    repo: str,
    revision: str,
    token: str | None,
    message: str,
    hub: HubServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"HF_ENDPOINT": hub.endpoint} | ({"HF_TOKEN": token} if token else {})
    argv = ["--source", f"hf://{repo}", "--revision", revision, "--dest", str(tmp_path / "m")]
    status, error = run(argv, env, monkeypatch, capsys)
    assert status == 1
    assert error.startswith("r1-runtime fetch: error: ")
    assert re.search(message, error), error
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--source", "s3://My_Bucket/r1"],
            r"--source s3://My_Bucket/r1: expected s3://<bucket>/<prefix>",
            id="an s3 bucket name S3 would refuse",
        ),
        pytest.param(
            ["--source", "gs:///r1"], r"expected gs://<bucket>/<prefix>", id="gs without a bucket"
        ),
        pytest.param(
            ["--source", "oci://reg.example/r1"],
            r"expected oci://<registry>/<repository>:<tag> or .*@sha256:<digest>",
            id="oci without a tag or digest",
        ),
        pytest.param(
            ["--source", "ftp://host/r1"],
            r"supported sources are hf://.*s3://<bucket>/<prefix>, gs://.*oci://",
            id="another scheme is refused naming every supported one",
        ),
        pytest.param(
            ["--source", "hf://just-a-name"], r"expected hf://<org>/<repo>", id="a repo without org"
        ),
        pytest.param(
            ["--source", "https://models.example/r1", "--revision", "main"],
            r"--revision applies to hf:// sources only",
            id="a revision for an http source",
        ),
        pytest.param(
            ["--source", "hf://org/demo", "--credentials-file", "/nonexistent/credentials"],
            r"--credentials-file /nonexistent/credentials: No such file",
            id="a credentials file that is not there",
        ),
    ],
)
def test_flags_the_fetcher_cannot_honour_exit_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, error = run([*argv, "--dest", str(tmp_path / "m")], {}, monkeypatch, capsys)
    assert status == 2
    assert re.search(message, error), error


def test_an_unreachable_endpoint_gives_up_with_the_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from r1_runtime.fetch import fetcher

    monkeypatch.setattr(fetcher.RetryPolicy, "sleep", lambda self, attempt: None)
    env = {"HF_ENDPOINT": "http://127.0.0.1:9"}  # discard port: connection refused
    status, error = run(
        ["--source", "hf://org/demo", "--dest", str(tmp_path / "m")], env, monkeypatch, capsys
    )
    assert status == 1
    assert "cannot reach http://127.0.0.1:9" in error and "gave up after 6 attempts" in error
