"""The structure of the two deployables, read from their own imports (every `import`, at module
level, inside a function or under TYPE_CHECKING alike): no import cycle anywhere, layers that
point down only (docs/architecture.md), the operator and the runtime apart, and no runtime
module over 300 lines."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"r1_operator": ROOT / "operator", "r1_runtime": ROOT / "runtime"}
MAX_RUNTIME_MODULE_LINES = 300

# What each part of the runtime may import of the project (the longest matching prefix
# applies; a part may always import itself). cli -> replica -> server -> build -> plan /
# distributed -> engine / engine_cache -> models -> models.kernels, beside leaves that import
# nothing of ours but each other.
RUNTIME = "r1_runtime"
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "r1_runtime": (),  # the package itself; every module has a longer entry of its own
    "r1_runtime.cli": ("r1_runtime",),
    "r1_runtime.replica": (
        "r1_runtime.build", "r1_runtime.config", "r1_runtime.distributed",
        "r1_runtime.engine_cache", "r1_runtime.logs", "r1_runtime.model_info", "r1_runtime.plan",
        "r1_runtime.server",
    ),
    "r1_runtime.server": (
        "r1_runtime.build", "r1_runtime.config", "r1_runtime.distributed", "r1_runtime.engine",
        "r1_runtime.engine_cache", "r1_runtime.logs", "r1_runtime.model_info",
        "r1_runtime.plan", "r1_runtime.security",
    ),
    "r1_runtime.build": (
        "r1_runtime.config", "r1_runtime.distributed", "r1_runtime.engine",
        "r1_runtime.engine_cache", "r1_runtime.model_info", "r1_runtime.models",
        "r1_runtime.plan",
    ),
    "r1_runtime.plan": (
        "r1_runtime.config", "r1_runtime.engine", "r1_runtime.model_info", "r1_runtime.models",
    ),
    "r1_runtime.distributed": ("r1_runtime.engine", "r1_runtime.layout", "r1_runtime.models"),
    "r1_runtime.engine_cache": (
        "r1_runtime.config", "r1_runtime.file_lock", "r1_runtime.files", "r1_runtime.security",
    ),
    "r1_runtime.engine": ("r1_runtime.models", "r1_runtime.model_info"),
    "r1_runtime.models": ("r1_runtime.layout", "r1_runtime.model_info"),
    "r1_runtime.models.kernels": (),
    "r1_runtime.logs": ("r1_runtime.config",),
    "r1_runtime.flags": ("r1_runtime.config",),
    "r1_runtime.config": ("r1_runtime.files", "r1_runtime.layout", "r1_runtime.security"),
    "r1_runtime.fetch": ("r1_runtime.file_lock", "r1_runtime.files"),
    "r1_runtime.security": (),
    "r1_runtime.demo": (),
    "r1_runtime.layout": (),
    "r1_runtime.model_info": ("r1_runtime.files",),
    "r1_runtime.file_lock": (),
    "r1_runtime.files": (),
}  # fmt: skip


@cache
def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of both packages."""
    found = {}
    for package, base in PACKAGES.items():
        for path in sorted((base / package).rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported(name: str, path: Path) -> Iterator[str]:
    """The project modules `name` imports; `from package import module` names the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base
                for alias in node.names
            ]
        else:
            continue
        yield from (target for target in targets if target in modules() and target != name)


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(imported(name, path)) for name, path in modules().items()}


def cycles() -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), each as a list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph()[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph()):
        if node not in index:
            visit(node)
    return found


def part_of(name: str) -> str:
    """The `MAY_IMPORT` entry that governs module `name`."""
    return max((part for part in MAY_IMPORT if (name + ".").startswith(part + ".")), key=len)


def test_the_graph_sees_the_imports_it_should() -> None:
    """A guard on the reader itself: known edges of each kind are found."""
    edges = graph()
    assert "r1_runtime.engine.backends.compile" in edges["r1_runtime.engine.backends"]  # lazy
    assert "r1_runtime.models.hf_fallback" in edges["r1_runtime.engine.model_runner"]  # typing
    assert "r1_runtime.models.kernels.ops" in edges["r1_runtime.models.kernels"]  # a submodule
    assert "r1_operator.api" in edges["r1_operator.crd"]


def test_no_module_imports_itself_through_others() -> None:
    assert cycles() == []


def test_the_operator_and_the_runtime_never_import_each_other() -> None:
    crossing = [
        (name, target)
        for name, targets in graph().items()
        for target in targets
        if target.split(".")[0] != name.split(".")[0]
    ]
    assert crossing == []


@pytest.mark.parametrize("part", sorted(MAY_IMPORT))
def test_each_runtime_layer_imports_only_the_layers_below_it(part: str) -> None:
    allowed = (part, *MAY_IMPORT[part])
    wrong = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        if name.startswith(RUNTIME) and part_of(name) == part
        for target in sorted(targets)
        if not any((target + ".").startswith(prefix + ".") for prefix in allowed)
    ]
    assert wrong == []


def test_every_runtime_module_belongs_to_a_layer() -> None:
    loose = [
        name for name in modules() if name.startswith(RUNTIME + ".") and part_of(name) == RUNTIME
    ]
    assert loose == []


def test_no_runtime_module_is_over_300_lines() -> None:
    long = {
        name: count
        for name, path in modules().items()
        if name.startswith(RUNTIME)
        and (count := len(path.read_text().splitlines())) > MAX_RUNTIME_MODULE_LINES
    }
    assert long == {}
