"""`r1-operator` as a user runs it: exit codes, streams and messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import ROOT, make_manifest
from r1_operator.cli import EXIT_INVALID, EXIT_USAGE, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path: Path, *documents: Any) -> Path:
    path = tmp_path / "dsd.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return path


def test_render_prints_one_yaml_stream_for_every_deployment_in_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    second = make_manifest(name="r2")
    code, out, _ = run(capsys, "render", str(write(tmp_path, make_manifest(), second)))
    assert code == 0
    manifests = list(yaml.safe_load_all(out))
    workloads = [m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"]
    assert workloads == ["r1", "r2"]


def test_render_of_an_invalid_spec_exits_1_and_names_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, make_manifest({"resources": {"gpus": "many"}}))
    code, out, err = run(capsys, "render", str(path))
    assert (code, out) == (EXIT_INVALID, "")
    assert "spec.resources.gpus" in err


def test_render_of_a_yaml_list_says_a_mapping_was_expected(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    code, _, err = run(capsys, "render", str(path))
    assert code == EXIT_INVALID
    assert "document 0: must be a YAML mapping" in err


def test_a_missing_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "render", "no-such-file.yaml")
    assert code == EXIT_USAGE
    assert "no-such-file.yaml" in err


def test_crd_prints_the_committed_crd(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "crd")
    assert code == 0
    assert out == (ROOT / "crds" / "deepseekdeployments.yaml").read_text()


@pytest.mark.parametrize(
    ("gpu", "expected_code"),
    [
        pytest.param(None, 0, id="full R1 fits its own 2 x 8 H100 example"),
        pytest.param("T4-16GB", EXIT_INVALID, id="full R1 does not fit 16 T4s"),
    ],
)
def test_plan_exit_code_says_whether_the_model_fits(
    capsys: pytest.CaptureFixture[str], gpu: str | None, expected_code: int
) -> None:
    argv = ["plan", str(ROOT / "examples" / "deepseek-r1-671b.yaml")]
    code, out, _ = run(capsys, *argv, *(["--gpu", gpu] if gpu else []))
    assert code == expected_code
    assert "671.03B parameters" in out


def test_plan_of_a_cpu_deployment_says_there_is_nothing_to_plan(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "plan", str(ROOT / "examples" / "cpu-demo.yaml"))
    assert code == 0
    assert "no plan" in out
