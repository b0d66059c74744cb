"""Markdown reference of the DeepSeekDeployment spec, generated from the CRD schema.

README.md carries `field_reference()` between its crd-reference markers (`make docs`
rewrites it with `splice_reference`); a test fails when the two drift.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from r1_operator.api import QUANTITY_PATTERN
from r1_operator.crd import INT_OR_STRING, VALIDATIONS, Schema, open_api_schema

START_MARKER = "<!-- crd-reference:start -->"
END_MARKER = "<!-- crd-reference:end -->"
_HEADER = "| Field | Type | Default | Validation | Description |\n| --- | --- | --- | --- | --- |"


def _cell(text: str) -> str:
    """One table cell: a single line, pipes escaped (GFM escapes them in code spans too)."""
    return " ".join(text.split()).replace("|", "\\|")


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _plain(text: str) -> str:
    """Plain text (a rule message) with Markdown's special characters escaped."""
    return re.sub(r"([\\`*_\[\]<])", r"\\\1", text)


def _code(value: Any) -> str:
    return f"`{value}`"


def _type_name(node: Schema) -> str:
    """Go-style type as in the Kubernetes API reference: `[]string`, `map[string]string`."""
    if node.get(INT_OR_STRING):
        return "quantity" if node.get("pattern") == QUANTITY_PATTERN else "int-or-string"
    if node.get("type") == "array":
        return f"[]{_type_name(node['items'])}"
    values = node.get("additionalProperties")
    if isinstance(values, dict):
        return f"map[string]{_type_name(values)}"
    return str(node.get("type", "any"))


def _range(node: Schema, label: str, low: str, high: str) -> list[str]:
    """`value [0, 1000]`, `value (0.1, 0.99]`, `length >= 1`: a bound pair as an interval."""
    lo, hi = node.get(low), node.get(high)
    lo_open = node.get("exclusiveMinimum") is True and low == "minimum"
    if lo is not None and hi is not None:
        return [f"{label} {'(' if lo_open else '['}{lo}, {hi}]"]
    if lo is not None:
        return [f"{label} {'>' if lo_open else '>='} {lo}"]
    return [f"{label} <= {hi}"] if hi is not None else []


def _validation(node: Schema, required: bool) -> str:
    """Required, enum, numeric range, lengths, item counts and pattern, in one cell."""
    parts = ["required"] if required else []
    if "enum" in node:
        parts.append("one of " + ", ".join(_code(json.dumps(v)) for v in node["enum"]))
    parts += _range(node, "value", "minimum", "maximum")
    parts += _range(node, "length", "minLength", "maxLength")
    parts += _range(node, "items", "minItems", "maxItems")
    if "pattern" in node and not node.get(INT_OR_STRING):
        parts.append("matches " + _code(node["pattern"]))
    return "; ".join(parts)


def _row(path: str, node: Schema, required: bool) -> str:
    default = _code(json.dumps(node["default"])) if "default" in node else ""
    cells = [
        _code(path),
        _code(_type_name(node)),
        default,
        _validation(node, required),
        node.get("description", ""),
    ]
    return _table_row(cells)


def _children(path: str, node: Schema) -> Iterator[tuple[str, Schema]]:
    """The nested schemas a reader reaches from `node`: fields, array items, map values."""
    for name, prop in node.get("properties", {}).items():
        yield f"{path}.{name}", prop
    if "items" in node:
        yield f"{path}[]", node["items"]
    if isinstance(node.get("additionalProperties"), dict):
        yield f"{path}.*", node["additionalProperties"]


def _walk(path: str, node: Schema) -> Iterator[tuple[str, Schema]]:
    """Every schema node under `node`, depth first, parents before children."""
    yield path, node
    for child_path, child in _children(path, node):
        yield from _walk(child_path, child)


def _object_table(path: str, node: Schema) -> str:
    required = set(node.get("required", []))
    rows = [_row(f"{path}.{name}", p, name in required) for name, p in node["properties"].items()]
    intro = f"### `{path}`\n\n{_cell(node.get('description', ''))}\n\n"
    return intro + "\n".join([_HEADER, *rows])


def _rules_table(spec: Schema) -> str:
    rows = [
        _table_row([_code(path), _code(rule["rule"]), _plain(rule["message"])])
        for path, node in _walk("spec", spec)
        for rule in node.get(VALIDATIONS, [])
    ]
    intro = (
        "### Validation rules\n\n"
        "CEL rules the API server checks at admission (the operator checks the same).\n\n"
    )
    return intro + "\n".join(["| Where | Rule | Message |", "| --- | --- | --- |", *rows])


def field_reference() -> str:
    """The spec reference as Markdown: one table per object (field path, type, default,
    validation, description), then every CEL rule with its message. Deterministic, ends
    with one newline; README.md embeds exactly this text between the markers."""
    spec = open_api_schema()["properties"]["spec"]
    tables = [
        _object_table(path, node) for path, node in _walk("spec", spec) if "properties" in node
    ]
    return "\n\n".join([*tables, _rules_table(spec)]) + "\n"


def splice_reference(readme: str) -> str:
    """`readme` with the text between the crd-reference markers replaced by
    `field_reference()`; raises ValueError when a marker is missing."""
    start, end = readme.find(START_MARKER), readme.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"README.md needs {START_MARKER} and then {END_MARKER}")
    head = readme[: start + len(START_MARKER)]
    return f"{head}\n{field_reference()}{readme[end:]}"


def main(argv: list[str]) -> int:
    """`python -m r1_operator.reference README.md`: rewrite the README's reference block."""
    for name in argv:
        path = Path(name)
        path.write_text(splice_reference(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
