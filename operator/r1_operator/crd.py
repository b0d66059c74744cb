"""The DeepSeekDeployment CustomResourceDefinition, generated from the pydantic models.

`build_crd()` is the whole apiextensions.k8s.io/v1 object and `crd_yaml()` its committed
text (crds/deepseekdeployments.yaml; a test fails when the two drift). The schema is
pydantic's JSON schema made structural, one small transform per rule of
https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode
from pydantic_core import core_schema

from r1_operator.api import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    DeepSeekDeploymentSpec,
    DeepSeekDeploymentStatus,
    cel,
)

Schema = dict[str, Any]

SINGULAR = KIND.lower()
SHORT_NAMES = ["dsd", "r1"]
CATEGORIES = ["ai", "r1-operator"]
INT_OR_STRING = "x-kubernetes-int-or-string"
VALIDATIONS = "x-kubernetes-validations"

# Keys a CRD schema node may carry (apiextensions.k8s.io/v1 JSONSchemaProps, less the ones
# structural schemas forbid); anything else pydantic emits must be transformed or refused.
_ALLOWED_KEYS = frozenset(
    {
        "description", "type", "format", "enum", "default", "nullable", "example",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
        "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
        "minProperties", "maxProperties", "required", "properties", "additionalProperties",
        "items", "anyOf", "allOf", "oneOf", "not",
    }
)  # fmt: skip
_KEY_ORDER = (
    "description", "type", "format", "enum", "default", "minimum", "exclusiveMinimum",
    "maximum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems",
    "maxItems", "anyOf", INT_OR_STRING, "x-kubernetes-preserve-unknown-fields", "required",
    "properties", "additionalProperties", "items", VALIDATIONS,
)  # fmt: skip
_RULE_KEY_ORDER = ("rule", "message", "messageExpression", "fieldPath", "reason")


class _FactoryDefaults(GenerateJsonSchema):
    """Also emits `default_factory` defaults: `{}` for a nested model (the API server then
    fills in its fields' own defaults), the value itself for lists and dicts."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = cast(Callable[[], Any], factory)()
        return {} if isinstance(value, BaseModel) else value


# --- one transform per structural-schema rule ------------------------------------------------


def _inline_ref(node: Schema, defs: dict[str, Schema]) -> Schema:
    """`{$ref, description}` becomes the referenced schema; the field's own keys win."""
    name = node["$ref"].removeprefix("#/$defs/")
    return {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}


def _is_optional(node: Schema) -> bool:
    branches = node.get("anyOf", [])
    return len(branches) == 2 and {"type": "null"} in branches


def _unwrap_optional(node: Schema) -> Schema:
    """`anyOf: [X, {type: null}]` becomes X (not required); a `default: null` goes."""
    inner = next(branch for branch in node["anyOf"] if branch != {"type": "null"})
    own = {k: v for k, v in node.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**inner, **own}


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline references and unwrap Optional until neither is left at this node."""
    while "$ref" in node or _is_optional(node):
        node = _inline_ref(node, defs) if "$ref" in node else _unwrap_optional(node)
    return node


def _drop_title(node: Schema) -> Schema:
    return {k: v for k, v in node.items() if k != "title"}


def _open_objects(node: Schema) -> Schema:
    """Drop `additionalProperties: false`: the API server prunes unknown fields instead,
    and `kubectl --validate=strict` rejects them. A map's value schema stays."""
    return {k: v for k, v in node.items() if not (k == "additionalProperties" and v is False)}


def _boolean_exclusive_bounds(node: Schema) -> Schema:
    """Draft 2020's `exclusiveMinimum: x` is OpenAPI v3.0's `minimum: x` plus a flag."""
    out = dict(node)
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[bound], out[exclusive] = value, True
    return out


def _cel_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _key_pattern(node: Schema) -> tuple[str, Schema] | None:
    """The pattern keys must match and the values' schema, for a map whose keys have one."""
    if "propertyNames" in node:
        return node["propertyNames"]["pattern"], node.get("additionalProperties", {})
    patterns = node.get("patternProperties", {})
    if len(patterns) > 1:
        raise ValueError(f"cannot express several patternProperties in a CRD: {patterns}")
    return next(iter(patterns.items()), None)


def _key_pattern_rule(node: Schema, path: str) -> Schema:
    """Kubernetes has no propertyNames/patternProperties: a CEL rule checks the keys."""
    found = _key_pattern(node)
    if found is None:
        return node
    pattern, values = found
    rule = cel(
        f"self.all(k, k.matches({_cel_string(pattern)}))",
        f"every key of {path} must match {pattern}",
    )
    out = {k: v for k, v in node.items() if k not in ("propertyNames", "patternProperties")}
    return {**out, "additionalProperties": values, VALIDATIONS: [*node.get(VALIDATIONS, []), rule]}


def _refuse_unsupported(node: Schema, path: str) -> Schema:
    unsupported = sorted(k for k in node if k not in _ALLOWED_KEYS and not k.startswith("x-"))
    if unsupported:
        raise ValueError(f"{path or 'spec'}: cannot express {unsupported} in a CRD schema")
    return node


def _ordered(node: Schema) -> Schema:
    """Keys in a reading order (description, type, constraints, children, rules)."""

    def rank(key: str) -> tuple[int, str]:
        return (_KEY_ORDER.index(key) if key in _KEY_ORDER else len(_KEY_ORDER), key)

    out = dict(sorted(node.items(), key=lambda item: rank(item[0])))
    if VALIDATIONS in out:
        out[VALIDATIONS] = [
            {k: rule[k] for k in _RULE_KEY_ORDER if k in rule} for rule in out[VALIDATIONS]
        ]
    return out


# --- the walk ---------------------------------------------------------------------------------


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _structural(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = _resolve(node, defs)
    for transform in (_drop_title, _open_objects, _boolean_exclusive_bounds):
        node = transform(node)
    node = _refuse_unsupported(_key_pattern_rule(node, path), path)
    return _ordered({**node, **_structural_children(node, defs, path)})


def _structural_children(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    children: Schema = {}
    if "properties" in node:
        children["properties"] = {
            name: _structural(prop, defs, _child(path, name))
            for name, prop in node["properties"].items()
        }
    if "items" in node:
        children["items"] = _structural(node["items"], defs, f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        children["additionalProperties"] = _structural(node["additionalProperties"], defs, path)
    return children


def structural_schema(
    model: type[BaseModel], mode: JsonSchemaMode = "validation", path: str = ""
) -> Schema:
    """`model`'s JSON schema as a structural CRD schema: references inlined, Optional
    unwrapped, no titles, no closed objects, map-key patterns as CEL rules, factory
    defaults included. `path` prefixes the field paths named in generated rule messages.
    Raises ValueError for a construct a CRD cannot express."""
    raw = model.model_json_schema(by_alias=True, mode=mode, schema_generator=_FactoryDefaults)
    defs = raw.pop("$defs", {})
    return copy.deepcopy(_structural(raw, defs, path))  # no sub-schema shared by two nodes


def apply_defaults(schema: Schema, value: Any) -> Any:
    """`value` with the schema's defaults applied as the API server applies them: a missing
    or null field takes a copy of its default, then defaulting continues inside every
    value, the defaulted ones included. `value` itself is left unchanged."""
    if isinstance(value, list):
        return [apply_defaults(schema.get("items", {}), item) for item in value]
    if not isinstance(value, dict):
        return value
    properties = schema.get("properties", {})
    filled = dict(value)
    for name, prop in properties.items():
        if filled.get(name) is None and "default" in prop:
            filled[name] = copy.deepcopy(prop["default"])
    extra = schema.get("additionalProperties")
    values_schema = extra if isinstance(extra, dict) else {}
    return {k: apply_defaults(properties.get(k, values_schema), v) for k, v in filled.items()}


# --- the CustomResourceDefinition -------------------------------------------------------------


def open_api_schema() -> Schema:
    """The version's `openAPIV3Schema`: apiVersion, kind, metadata, spec (required), status."""
    spec = structural_schema(DeepSeekDeploymentSpec)
    status = structural_schema(DeepSeekDeploymentStatus, mode="serialization")
    return {
        "description": spec["description"],
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"description": "Versioned schema of this object.", "type": "string"},
            "kind": {"description": "REST resource this object represents.", "type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

SUBRESOURCES = {
    "status": {},
    "scale": {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    },
}


def build_crd() -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition of DeepSeekDeployment: one
    served and stored version, status and scale subresources, printer columns. A pure
    function of the API models: two calls return equal objects."""
    names = {
        "kind": KIND,
        "listKind": f"{KIND}List",
        "plural": PLURAL,
        "singular": SINGULAR,
        "shortNames": list(SHORT_NAMES),
        "categories": list(CATEGORIES),
    }
    version = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": open_api_schema()},
        "subresources": copy.deepcopy(SUBRESOURCES),
        "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {"group": GROUP, "names": names, "scope": "Namespaced", "versions": [version]},
    }


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings; no anchors for shared sub-schemas."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)

HEADER = "# Generated from operator/r1_operator/api/ by `make crds`; do not edit.\n"


def crd_yaml() -> str:
    """`build_crd()` as YAML: keys in their built order, no line folding, same bytes on
    every call. This is the text of crds/deepseekdeployments.yaml."""
    body = yaml.dump(build_crd(), Dumper=_Dumper, sort_keys=False, width=1_000_000)
    return HEADER + body
