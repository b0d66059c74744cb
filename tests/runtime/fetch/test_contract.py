"""`r1-runtime fetch`'s flags are the contract table in docs/runtime-flags.md; listed paths
cannot escape --dest; progress lines read well in `kubectl logs`."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import pytest
from r1_runtime.cli import _parser
from r1_runtime.fetch import FetchError
from r1_runtime.fetch.listing import checked_path
from r1_runtime.fetch.progress import Progress

ROOT = Path(__file__).resolve().parents[3]

# A value for each documented flag, as the operator renders it.
OPERATOR_VALUES = {
    "--source": "hf://deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "--revision": "main",
    "--dest": "/models/hf/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B/main",
    "--credentials-file": "/var/run/secrets/r1-runtime/fetch/credentials",
}


def fetch_table() -> dict[str, str]:
    text = (ROOT / "docs" / "runtime-flags.md").read_text()
    section = text.split("## `r1-runtime fetch`")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(--[a-z-]+)` \| ([^|]*) \|", section, flags=re.MULTILINE)
    return {flag: value.strip() for flag, value in rows}


def fetch_parser() -> argparse.ArgumentParser:
    subparsers = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["fetch"]


def test_the_fetch_flags_are_exactly_the_contract_table() -> None:
    flags = {flag for action in fetch_parser()._actions for flag in action.option_strings}
    assert flags - {"-h", "--help"} == set(fetch_table()) == set(OPERATOR_VALUES)


def test_the_operators_arguments_parse() -> None:
    argv = ["fetch", *[part for pair in OPERATOR_VALUES.items() for part in pair]]
    args = _parser().parse_args(argv)
    assert (args.source, args.revision) == ("hf://deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "main")
    assert args.dest == Path(OPERATOR_VALUES["--dest"])
    assert args.credentials_file == Path(OPERATOR_VALUES["--credentials-file"])


@pytest.mark.parametrize("missing", ["--source", "--dest"])
def test_source_and_dest_are_required(missing: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "fetch",
        *[
            part
            for flag, value in OPERATOR_VALUES.items()
            if flag != missing
            for part in (flag, value)
        ],
    ]
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(argv)
    assert exit_info.value.code == 2 and missing in capsys.readouterr().err


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("../etc/passwd", id="a parent directory"),
        pytest.param("/etc/passwd", id="an absolute path"),
        pytest.param("a/../../b", id="a parent hidden in the middle"),
        pytest.param("a//b", id="an empty segment"),
        pytest.param("", id="an empty path"),
        pytest.param(".", id="the directory itself"),
    ],
)
def test_a_listed_path_outside_dest_is_refused(path: str) -> None:
    with pytest.raises(FetchError, match="path"):
        checked_path(path)


def test_nested_listed_paths_are_fine() -> None:
    assert checked_path("original/model-00001-of-00002.safetensors").startswith("original/")


def test_progress_lines_carry_bytes_rate_eta_and_file_every_interval() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress(
        total_bytes=4 << 30, num_files=2, out=out, interval_s=5.0, clock=lambda: now[0]
    )
    for _ in range(10):
        now[0] += 1.0
        progress.add(100 << 20, "model-00001-of-00002.safetensors")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 2
    assert lines[-1] == (
        "r1-runtime fetch: 1000.0 MiB / 4.0 GiB (24.4%), 100.0 MiB/s, ETA 31s; "
        "model-00001-of-00002.safetensors"
    )
