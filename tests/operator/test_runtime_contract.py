"""Every command line the operator renders parses with the runtime's own CLI parser (so
every flag the runtime requires is there, and every value has the type it wants): serve,
build and fetch, for the examples and for generated specs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import EXAMPLES, make_manifest
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError
from r1_operator.api import DeepSeekDeployment
from r1_operator.render import render
from r1_runtime.cli import _parser
from r1_runtime.security.settings import SecuritySettingsError, parse_security
from render_support import Manifest, manifests, of_kind, pod_templates

KUBELET_ENV = {"LWS_WORKER_INDEX": "1"}
"""What the kubelet substitutes for `$(VAR)` in args (the LWS controller sets these)."""


def command_lines(rendered: list[Manifest]) -> list[list[str]]:
    """The args of every container and init container of every rendered pod template."""
    templates = pod_templates(rendered) + [j["spec"]["template"] for j in of_kind(rendered, "Job")]
    return [
        [re.sub(r"\$\((\w+)\)", lambda m: KUBELET_ENV[m.group(1)], arg) for arg in c["args"]]
        for template in templates
        for c in template["spec"]["containers"] + template["spec"].get("initContainers", [])
    ]


def assert_parses(dsd: DeepSeekDeployment) -> set[str]:
    commands = set()
    for argv in command_lines(render(dsd)):
        try:
            _parser().parse_args(argv)
        except SystemExit as error:  # argparse's way of refusing
            raise AssertionError(f"r1-runtime refuses {argv}") from error
        commands.add(argv[0])
    return commands


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
@pytest.mark.parametrize("prebuild", [False, True], ids=["as written", "with prebuild"])
def test_example_command_lines_parse(path: Path, prebuild: bool) -> None:
    manifest: dict[str, Any] = yaml.safe_load(path.read_text())
    if prebuild and manifest["spec"].get("parallelism", {}).get("nodes", 1) > 1:
        pytest.skip("a pre-build is single-node only")
    if prebuild:
        manifest["spec"].setdefault("engine", {})["prebuild"] = True
    commands = assert_parses(DeepSeekDeployment.from_manifest(manifest))
    builds = manifest["spec"].get("engine", {}).get("prebuild", False)
    assert "serve" in commands and ("build" in commands) == builds


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests())
def test_generated_command_lines_parse(manifest: dict[str, Any]) -> None:
    assert_parses(DeepSeekDeployment.from_manifest(manifest))


def operator_accepts(deny_pattern: str) -> bool:
    manifest = make_manifest({"security": {"inputFilter": {"denyPatterns": [deny_pattern]}}})
    try:
        DeepSeekDeployment.from_manifest(manifest)
    except ValidationError:
        return False
    return True


def runtime_accepts(deny_pattern: str) -> bool:
    try:
        parse_security({"inputFilter": {"denyPatterns": [deny_pattern]}})
    except SecuritySettingsError:
        return False
    return True


@pytest.mark.parametrize(
    "pattern",
    ["x?", "a*", "^", "$", "(?:)", "a|", r"\b", "(?=x)", "abc", "a+", r"\d{3}-\d{4}", "(open"],
)
def test_the_operator_refuses_exactly_the_deny_patterns_the_runtime_refuses(pattern: str) -> None:
    """A deny pattern the runtime refuses at start would crash-loop the pods: the operator
    refuses the same ones when the spec is applied (empty matches, invalid syntax)."""
    assert operator_accepts(pattern) == runtime_accepts(pattern)
