"""`r1-runtime serve`'s flags: the operator contract (docs/runtime-flags.md) parses in full,
and every value the runtime cannot honour is refused at start-up with a message naming it."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest
from r1_runtime.cli import main
from r1_runtime.config import ConfigError, RuntimeConfig, Settings
from r1_runtime.flags import add_serve_arguments
from r1_runtime.model_info import ModelInfo
from r1_runtime.plan import plan_engine

ROOT = Path(__file__).resolve().parents[3]
FLAGS_DOC = ROOT / "docs" / "runtime-flags.md"

# A value for each documented flag, as the operator renders it (None: a switch).
OPERATOR_VALUES: dict[str, str | None] = {
    "--model": "/models/hf/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B/main",
    "--served-model-name": "deepseek-r1-distill-qwen-7b",
    "--host": "0.0.0.0",
    "--port": "8000",
    "--backend": "eager",
    "--precision": "auto",
    "--dtype": "bfloat16",
    "--max-batch-tokens": "8192",
    "--max-num-seqs": "64",
    "--max-model-len": "32768",
    "--gpu-memory-utilization": "0.9",
    "--tensor-parallel-size": "1",
    "--pipeline-parallel-size": "1",
    "--nnodes": "2",
    "--node-rank": "1",
    "--engine-cache": "/cache/engines",
    "--no-build-on-start": None,
    "--api-key-file": "/var/run/secrets/r1-runtime/auth/api-keys",
    "--tls-cert": "/var/run/secrets/r1-runtime/tls/tls.crt",
    "--tls-key": "/var/run/secrets/r1-runtime/tls/tls.key",
    "--tls-client-ca": "/var/run/secrets/r1-runtime/client-ca/ca.crt",
    "--settings": "/etc/r1-runtime/settings.json",
    "--log-dir": "/logs",
}


def serve_table() -> dict[str, str]:
    """`flag -> value column` of the `r1-runtime serve` table."""
    section = FLAGS_DOC.read_text().split("## `r1-runtime serve`")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(--[a-z-]+)` \| ([^|]*) \|", section, flags=re.MULTILINE)
    return {flag: value.strip() for flag, value in rows}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_serve_arguments(parser)
    return parser


def argv(values: dict[str, str | None]) -> list[str]:
    return [part for flag, value in values.items() for part in (flag, value) if part is not None]


def test_the_contract_table_lists_the_flags_this_test_feeds() -> None:
    assert set(serve_table()) == set(OPERATOR_VALUES)


def test_serve_parses_every_flag_of_the_contract() -> None:
    args = parser().parse_args(argv(OPERATOR_VALUES))
    assert args.model == Path(OPERATOR_VALUES["--model"] or "")
    assert (args.nnodes, args.node_rank, args.build_on_start) == (2, 1, False)
    assert args.tls_client_ca == Path("/var/run/secrets/r1-runtime/client-ca/ca.crt")


@pytest.mark.parametrize(
    ("flag", "choice"),
    [
        pytest.param(flag, choice, id=f"{flag} {choice}")
        for flag, value in serve_table().items()
        for choice in re.findall(r"`([a-z0-9]+)`", value)
    ],
)
def test_serve_accepts_every_documented_choice(flag: str, choice: str) -> None:
    values = {"--model": "/m", flag: choice}
    assert getattr(parser().parse_args(argv(values)), flag[2:].replace("-", "_")) == choice


def test_an_unexpanded_node_rank_is_refused_with_the_reason() -> None:
    with pytest.raises(argparse.ArgumentError, match="kubelet expands"):
        parser().parse_args(["--model", "/m", "--node-rank", "$(LWS_WORKER_INDEX)"])


@pytest.fixture
def files(tmp_path: Path, demo_model_dir: Path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("keys", "tls.crt", "tls.key", "ca.crt")}
    for path in paths.values():
        path.write_text("x\n")
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"servedModelName": "r1"}))
    return paths | {"settings.json": settings, "model": demo_model_dir}


def config_of(values: dict[str, str | None], environ: dict[str, str] | None = None) -> Any:
    return RuntimeConfig.from_args(parser().parse_args(argv(values)), environ or {})


DROP = "(drop this flag)"


def single_node(files: dict[str, Path], **changes: str | None) -> dict[str, str | None]:
    values = {
        **OPERATOR_VALUES,
        "--model": str(files["model"]),
        "--served-model-name": "r1",
        "--api-key-file": str(files["keys"]),
        "--tls-cert": str(files["tls.crt"]),
        "--tls-key": str(files["tls.key"]),
        "--tls-client-ca": str(files["ca.crt"]),
        "--settings": str(files["settings.json"]),
        "--nnodes": "1",
        "--node-rank": "0",
    }
    return {flag: value for flag, value in {**values, **changes}.items() if value != DROP}


def test_a_single_node_pod_command_line_is_a_valid_config(files: dict[str, Path]) -> None:
    config = config_of(single_node(files), {"R1_API_KEYS": "a, b\nc"})
    assert config.served_model_name == "r1"
    assert config.api_keys == ("a", "b", "c")
    assert config.settings == Settings(served_model_name="r1")
    assert config.engine_dtype == "bfloat16"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"--precision": "int8"}, "int8 engine", id="int8 compute"),
        pytest.param(
            {"--tensor-parallel-size": "3", "--nnodes": "2", "--node-rank": "1"},
            "--nnodes 2 does not divide",
            id="ranks that do not split evenly over the nodes",
        ),
        pytest.param({"--collective-timeout": "-1"}, "--collective-timeout", id="negative wait"),
        pytest.param({"--node-rank": "3"}, "--node-rank 3", id="a rank outside the group"),
        pytest.param({"--gpu-memory-utilization": "0.05"}, "(0.1, 0.99]", id="memory share"),
        pytest.param({"--max-num-seqs": "9000"}, "--max-batch-tokens", id="batch below seqs"),
        pytest.param({"--max-model-len": "0"}, "--max-model-len", id="no context"),
        pytest.param({"--tls-key": DROP}, "go together", id="a certificate without key"),
        pytest.param({"--api-key-file": "/nope"}, "--api-key-file /nope", id="no key file"),
        pytest.param({"--served-model-name": "other"}, "servedModelName", id="two names"),
        pytest.param({"--model": "/tmp"}, "no config.json", id="no checkpoint"),
    ],
)
def test_a_value_that_cannot_be_honoured_is_refused(
    files: dict[str, Path], changes: dict[str, str | None], message: str
) -> None:
    values = single_node(files, **changes)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_of(values)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"--tensor-parallel-size": "3"}, "does not divide the 8 heads", id="heads over TP3"
        ),
        pytest.param(
            {"--pipeline-parallel-size": "9"}, "exceeds the model's 8 layers", id="PP9 of 8 layers"
        ),
        pytest.param(
            {"--precision": "fp8"}, "keeps an fp8 checkpoint's weights", id="fp8 of a bf16 model"
        ),
    ],
)
def test_a_layout_the_model_cannot_take_is_refused_before_loading(
    files: dict[str, Path], changes: dict[str, str | None], message: str
) -> None:
    config = config_of(single_node(files, **changes))
    with pytest.raises(ConfigError, match=re.escape(message)):
        plan_engine(config, ModelInfo.read(config.model))


def test_a_layout_over_the_transformers_fallback_is_refused(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    raw = json.loads((demo_model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "use_sliding_window": True}))
    config = RuntimeConfig(model=tmp_path, served_model_name="sw", tensor_parallel_size=2)
    with pytest.raises(ConfigError, match="transformers fallback, which runs on one device"):
        plan_engine(config, ModelInfo.read(config.model))


def test_a_client_ca_needs_a_server_certificate(files: dict[str, Path]) -> None:
    values = single_node(files, **{"--tls-cert": DROP, "--tls-key": DROP})
    with pytest.raises(ConfigError, match="--tls-client-ca needs --tls-cert"):
        config_of(values)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param("{", "cannot read a JSON object", id="not JSON"),
        pytest.param("[]", "expected a JSON object", id="not an object"),
        pytest.param('{"quantization": "awq"}', "quantization 'awq'", id="quantized weights"),
        pytest.param('{"servedModelName": 7}', "servedModelName must be a str", id="a wrong type"),
    ],
)
def test_a_settings_file_that_cannot_be_honoured_is_refused(
    files: dict[str, Path], settings: str, message: str
) -> None:
    files["settings.json"].write_text(settings)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_of(single_node(files))


def test_settings_keys_the_runtime_does_not_know_are_ignored(files: dict[str, Path]) -> None:
    """Such as the top-level inputFilter/outputFilter switches of older operators, of any
    type: the security rules live under `security` (docs/security.md)."""
    old = {"servedModelName": "r1", "inputFilter": "yes", "outputFilter": True, "later": {}}
    files["settings.json"].write_text(json.dumps(old))
    assert config_of(single_node(files)).settings == Settings(served_model_name="r1")


def test_tensorrt_without_a_gpu_fails_fast(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_of(single_node(files, **{"--backend": "tensorrt"}))
    with pytest.raises(ConfigError, match="needs an NVIDIA GPU"):
        plan_engine(config, ModelInfo.read(config.model))
    code = main(["serve", *argv(single_node(files, **{"--backend": "tensorrt"}))])
    assert code == 2
    assert (
        "r1-runtime serve: error: --backend tensorrt needs an NVIDIA GPU" in capsys.readouterr().err
    )


def test_an_unwritable_log_dir_stops_the_start_with_the_flag_and_the_fix(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_directory = tmp_path / "logs"
    not_a_directory.write_text("a file where the cold tier should be mounted\n")
    values = single_node(files, **{"--backend": "eager", "--log-dir": str(not_a_directory)})
    assert main(["serve", *argv(values)]) == 2
    error = capsys.readouterr().err
    assert f"r1-runtime serve: error: --log-dir {not_a_directory}: cannot write" in error
    assert "mount a writable volume there" in error


def test_precision_wins_over_dtype_and_auto_follows_the_checkpoint(files: dict[str, Path]) -> None:
    both = config_of(single_node(files, **{"--precision": "fp32", "--dtype": "bfloat16"}))
    auto = config_of(single_node(files, **{"--precision": "auto", "--dtype": "auto"}))
    assert (both.engine_dtype, auto.engine_dtype) == ("float32", None)


def test_the_served_name_defaults_to_the_settings_then_the_directory(
    files: dict[str, Path],
) -> None:
    from_settings = single_node(files, **{"--served-model-name": DROP})
    assert config_of(from_settings).served_model_name == "r1"
    bare = {"--model": str(files["model"])}
    assert config_of(bare).served_model_name == files["model"].name
