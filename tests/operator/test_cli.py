"""`r1-operator` as a user runs it: exit codes, streams and messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import ROOT, make_manifest
from r1_operator.cli import EXIT_INVALID, EXIT_USAGE, PRIORITY_RANGE, main, peering_priority


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


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param([], {"standalone": True, "priority": 0}, id="standalone runs at priority 0"),
        pytest.param(
            ["--peering=r1", "--priority=7"],
            {"standalone": False, "peering_name": "r1", "priority": 7},
            id="a given priority reaches kopf as given",
        ),
    ],
)
def test_run_passes_peering_and_priority_to_kopf(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: dict[str, Any]
) -> None:
    kopf = pytest.importorskip("kopf")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    assert main(["run", *argv]) == 0
    [kwargs] = calls
    assert {key: kwargs[key] for key in expected} == expected


def test_peered_replicas_started_alike_draw_different_priorities() -> None:
    """kopf pauses all peers of one priority: replicas of one Deployment must differ."""
    drawn = {peering_priority(None, "r1") for _ in range(50)}
    assert len(drawn) == 50
    assert all(PRIORITY_RANGE[0] <= p <= PRIORITY_RANGE[1] for p in drawn)
