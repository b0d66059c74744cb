"""`r1-runtime build`: the operator contract (docs/runtime-flags.md, its build table) parses
in full, build and serve agree on the key for the operator's arguments, and the result (or
the reason it failed) reaches the termination message the operator reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from r1_runtime import build, cli, plan
from r1_runtime.cli import main
from r1_runtime.config import RuntimeConfig
from r1_runtime.model_info import ModelInfo

from .fakes import FileBackend, count_builds

ROOT = Path(__file__).resolve().parents[3]
FLAGS_DOC = ROOT / "docs" / "runtime-flags.md"
SERVE_ONLY = {"--host", "--port", "--api-key-file", "--tls-cert", "--tls-key", "--tls-client-ca"}
SERVE_ONLY |= {"--no-build-on-start", "--nnodes", "--node-rank"}  # a pre-build is single-node

# A value for each flag of the build table, as the operator renders it.
OPERATOR_VALUES: dict[str, str] = {
    "--model": "/models/hf/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B/main",
    "--served-model-name": "deepseek-r1-distill-qwen-7b",
    "--backend": "compile",
    "--precision": "auto",
    "--dtype": "bfloat16",
    "--max-batch-tokens": "8192",
    "--max-num-seqs": "64",
    "--max-model-len": "32768",
    "--gpu-memory-utilization": "0.9",
    "--tensor-parallel-size": "1",
    "--pipeline-parallel-size": "1",
    "--engine-cache": "/cache/engines",
    "--settings": "/etc/r1-runtime/settings.json",
    "--log-dir": "/logs",
    "--termination-message-path": "/dev/termination-log",
}


def table(command: str) -> dict[str, str]:
    """`flag -> value column` of the table of `r1-runtime COMMAND`."""
    section = FLAGS_DOC.read_text().split(f"## `r1-runtime {command}`")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(--[a-z-]+)` \| ([^|]*) \|", section, flags=re.MULTILINE)
    return {flag: value.strip() for flag, value in rows}


def argv(values: dict[str, str]) -> list[str]:
    return [part for flag, value in values.items() for part in (flag, value)]


def parse_build(values: dict[str, str]) -> Any:
    return cli._parser().parse_args(["build", *argv(values)])


def test_the_build_table_lists_the_flags_this_test_feeds() -> None:
    assert set(table("build")) == set(OPERATOR_VALUES)


def test_build_takes_serves_engine_flags_and_the_termination_message_path() -> None:
    assert set(table("build")) == set(table("serve")) - SERVE_ONLY | {"--termination-message-path"}


def test_build_parses_every_flag_of_the_contract() -> None:
    args = parse_build(OPERATOR_VALUES)
    assert args.engine_cache == Path("/cache/engines")
    assert args.termination_message_path == Path("/dev/termination-log")
    assert (args.backend, args.max_model_len) == ("compile", 32768)


@pytest.mark.parametrize("flag", sorted(SERVE_ONLY - {"--no-build-on-start"}))
def test_build_refuses_the_serving_flags(flag: str) -> None:
    with pytest.raises(SystemExit):
        parse_build({"--model": "/m", flag: "1"})


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FileBackend:
    files = FileBackend(tmp_path / "builds.log", name="compile")
    monkeypatch.setattr(plan, "get_backend", lambda name, device: files)
    return files


@pytest.fixture
def local_values(demo_model_dir: Path, tmp_path: Path) -> dict[str, str]:
    """The operator's values, with paths that exist here."""
    settings = tmp_path / "settings.json"
    settings.write_text("{}")
    return {
        **OPERATOR_VALUES,
        "--model": str(demo_model_dir),
        "--dtype": "float32",
        "--max-model-len": "512",
        "--engine-cache": str(tmp_path / "engines"),
        "--settings": str(settings),
        "--log-dir": str(tmp_path / "logs"),
        "--termination-message-path": str(tmp_path / "termination-log"),
    }


def run_build(values: dict[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit status, stdout and the termination message."""
    status = main(["build", *argv(values)])
    message = Path(values["--termination-message-path"]).read_text()
    return status, capsys.readouterr().out, message


def test_build_records_the_key_then_finds_it_without_loading_the_weights(
    local_values: dict[str, str],
    backend: FileBackend,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    status, out, message = run_build(local_values, capsys)
    assert status == 0 and out == message and message.endswith("\n")
    first = json.loads(message)
    assert set(first) == {"engineCacheKey", "entry", "built"} and first["built"] is True
    assert first["entry"] == str(Path(local_values["--engine-cache"]) / first["engineCacheKey"])
    assert Path(first["entry"], "manifest.json").is_file()

    monkeypatch.setattr(build, "load_model", lambda *args, **kw: pytest.fail("loaded weights"))
    status, out, message = run_build(local_values, capsys)
    assert status == 0 and json.loads(message) == {**first, "built": False}
    assert count_builds(backend.builds) == 1


def test_build_and_serve_agree_on_the_key_for_the_operators_arguments(
    local_values: dict[str, str], backend: FileBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, message = run_build(local_values, capsys)
    serve_values = {
        flag: value for flag, value in local_values.items() if flag != "--termination-message-path"
    } | {"--host": "0.0.0.0", "--port": "8000", "--nnodes": "1", "--node-rank": "0"}
    args = cli._parser().parse_args(["serve", *argv(serve_values), "--no-build-on-start"])
    config = RuntimeConfig.from_args(args, {})
    key = build.cached_engine_key(config, build.plan_engine(config, ModelInfo.read(config.model)))
    assert key is not None
    assert key.key == json.loads(message)["engineCacheKey"]


def test_a_failed_build_writes_one_line_of_reason_and_leaves_no_entry(
    local_values: dict[str, str],
    backend: FileBackend,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def out_of_memory(entry: Path) -> None:
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")

    monkeypatch.setattr(backend, "build_or_load", out_of_memory)
    status, out, message = run_build(local_values, capsys)
    assert (status, out) == (1, "")
    assert message.count("\n") == 1 and "CUDA out of memory. Tried to allocate" in message
    assert [p for p in Path(local_values["--engine-cache"]).iterdir() if p.name[0] != "."] == []


def test_a_flag_error_reaches_the_termination_message(
    local_values: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, message = run_build({**local_values, "--max-num-seqs": "0"}, capsys)
    assert (
        status == 2 and message == "r1-runtime build: error: --max-num-seqs must be >= 1, got 0\n"
    )


def test_eager_has_nothing_to_build(
    local_values: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, message = run_build({**local_values, "--backend": "eager"}, capsys)
    assert status == 0
    assert json.loads(message) == {"engineCacheKey": None, "entry": None, "built": False}


def test_the_default_termination_log_is_written_only_when_writable(
    local_values: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {k: v for k, v in local_values.items() if k != "--termination-message-path"}
    values["--backend"] = "eager"
    log = tmp_path / "dev-termination-log"
    monkeypatch.setattr(cli, "TERMINATION_LOG", log)
    assert main(["build", *argv(values)]) == 0 and not log.exists()
    log.write_text("")
    assert main(["build", *argv(values)]) == 0
    assert json.loads(log.read_text())["built"] is False
