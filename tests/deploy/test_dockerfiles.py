"""The two Dockerfiles: hadolint finds nothing, and what they install and expose agrees with
pyproject.toml and with the pods the operator renders. (No Docker engine runs here, so the
images are never built: docs/images.md.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from r1_operator.render import args, common, pod

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"
OPERATOR = ROOT / "operator" / "Dockerfile"
RUNTIME = ROOT / "runtime" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
Instruction = tuple[str, str]
"""(KEYWORD, arguments) with continuation lines joined and comments dropped."""


def instructions(dockerfile: Path) -> list[Instruction]:
    found, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
            pending = ""
    return found


def arguments(dockerfile: Path, keyword: str) -> list[str]:
    return [rest for kind, rest in instructions(dockerfile) if kind == keyword]


def build_args(dockerfile: Path) -> dict[str, str]:
    """Defaults of every `ARG NAME=value` (the last one wins)."""
    pairs = (rest.partition("=") for rest in arguments(dockerfile, "ARG"))
    return {name: value.strip('"') for name, sep, value in pairs if sep}


def installed_extras(dockerfile: Path) -> set[str]:
    """Extras of the project itself that the Dockerfile's pip installs (`./[a,b]`)."""
    runs = " ".join(arguments(dockerfile, "RUN"))
    groups = re.findall(r"\./\[([^\]]+)\]", runs)
    return {extra.strip() for group in groups for extra in group.split(",")}


def closure(requirements: list[str], extras: tuple[str, ...] = ()) -> set[str]:
    """Names of every distribution `requirements` pull in, walking the metadata of the
    distributions installed in this venv (environment markers evaluated here, Linux)."""
    seen: set[str] = set()
    todo = [(Requirement(r), set(extras)) for r in requirements]
    while todo:
        requirement, wanted = todo.pop()
        marker = requirement.marker
        if marker and not any(marker.evaluate({"extra": e}) for e in wanted or {""}):
            continue
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            nested_requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            missing = f"{name} is not installed here: run `make` to set up .venv"
            raise AssertionError(missing) from None
        for nested in nested_requirements:
            todo.append((Requirement(nested), set(requirement.extras)))
    return seen


def project_closure(*extras: str) -> set[str]:
    wanted = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        wanted += EXTRAS[extra]
    return closure(wanted)


@pytest.mark.parametrize("dockerfile", [OPERATOR, RUNTIME], ids=["operator", "runtime"])
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = subprocess.run(
        [str(HADOLINT), "--config", str(ROOT / ".hadolint.yaml"), "-f", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("dockerfile", [OPERATOR, RUNTIME], ids=["operator", "runtime"])
def test_every_inline_hadolint_ignore_says_why_on_the_line_above(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[number - 1].strip()
            assert above.startswith("#") and "hadolint" not in above, (
                f"{dockerfile.name}:{number + 1}: put the reason for the ignore on the line above"
            )


@pytest.mark.parametrize(
    ("dockerfile", "extras"),
    [(OPERATOR, {"operator"}), (RUNTIME, {"runtime", "gpu"})],
    ids=["the operator image installs [operator]", "the runtime image installs [runtime,gpu]"],
)
def test_each_image_installs_exactly_its_extras(dockerfile: Path, extras: set[str]) -> None:
    assert installed_extras(dockerfile) == extras
    assert extras <= EXTRAS.keys(), f"pyproject.toml has no extra {extras - EXTRAS.keys()}"


def test_the_operator_image_pulls_no_torch() -> None:
    operator = project_closure("operator")
    assert {"kopf", "kubernetes", "pydantic"} <= operator
    assert not {"torch", "transformers", "tensorrt", "flash-attn"} & operator
    # The same walk does see torch through [runtime], so the check above can fail.
    assert "torch" in project_closure("runtime")


def test_the_runtime_image_takes_torch_at_pyprojects_version_from_a_matching_cuda_index() -> None:
    pins = {Requirement(r).name: Requirement(r).specifier for r in EXTRAS["runtime"]}
    defaults = build_args(RUNTIME)
    assert str(pins["torch"]) == f"=={defaults['TORCH_VERSION']}"
    major, minor, *_ = defaults["CUDA_VERSION"].split(".")
    assert major == "12", "the deployment guide's base is CUDA 12"
    assert defaults["TORCH_CUDA"] == f"cu{major}{minor}"
    assert defaults["TORCH_INDEX"] == "https://download.pytorch.org/whl/${TORCH_CUDA}"
    runs = " ".join(arguments(RUNTIME, "RUN"))
    assert '--index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"' in runs
    assert '--extra-index-url "${TORCH_INDEX}"' in runs


def test_the_bases_are_cuda_12_on_ubuntu_22_04_and_slim_python_3_11() -> None:
    defaults = build_args(RUNTIME)
    assert defaults["BUILD_IMAGE"] == "nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04"
    assert defaults["BASE_IMAGE"] == "nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu22.04"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", build_args(OPERATOR)["PYTHON_IMAGE"])


def test_the_runtime_image_matches_the_pods_the_operator_renders() -> None:
    assert arguments(RUNTIME, "USER")[-1] == f"{pod.RUNTIME_UID}:{pod.RUNTIME_UID}"
    assert json.loads(arguments(RUNTIME, "ENTRYPOINT")[-1]) == args.RUNTIME_COMMAND
    volumes = set(json.loads(arguments(RUNTIME, "VOLUME")[-1]))
    assert volumes == {common.MODELS_DIR, common.CACHE_DIR, common.LOGS_DIR, common.TMP_DIR}
    assert "HOME=/tmp" in " ".join(arguments(RUNTIME, "ENV"))


def test_the_operator_image_runs_the_operator_as_a_numeric_non_root_user() -> None:
    user = arguments(OPERATOR, "USER")[-1]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "numeric, so runAsNonRoot can check it"
    assert json.loads(arguments(OPERATOR, "ENTRYPOINT")[-1]) == ["r1-operator", "run"]


@pytest.mark.parametrize("dockerfile", [OPERATOR, RUNTIME], ids=["operator", "runtime"])
def test_the_build_context_keeps_what_the_dockerfile_copies(dockerfile: Path) -> None:
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = {
        source.rstrip("/")
        for rest in arguments(dockerfile, "COPY")
        if not rest.startswith("--from")
        for source in rest.split()[:-1]
    }
    assert sources and sources <= allowed
    assert PYPROJECT["project"]["readme"] in allowed


def test_the_chart_runs_the_operator_image_as_its_user() -> None:
    values = yaml.safe_load((ROOT / "charts" / "r1-operator" / "values.yaml").read_text())
    user, group = arguments(OPERATOR, "USER")[-1].split(":")
    context = values["podSecurityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(user), int(group))
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
