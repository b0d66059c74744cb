"""The generated CRD: the committed copy is in step, the schema is structural and valid for
Kubernetes, and it accepts and rejects the same objects as the pydantic models."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pydantic
import pytest
import yaml
from factories import ROOT, make_manifest
from r1_operator.api import DeepSeekDeploymentSpec, DeepSeekDeploymentStatus
from r1_operator.crd import (
    INT_OR_STRING,
    VALIDATIONS,
    Schema,
    apply_defaults,
    build_crd,
    crd_yaml,
    open_api_schema,
    structural_schema,
)
from r1_operator.reference import END_MARKER, START_MARKER, field_reference, splice_reference

CRD_FILE = ROOT / "crds" / "deepseekdeployments.yaml"
README = ROOT / "README.md"
PRESERVE = "x-kubernetes-preserve-unknown-fields"
SCHEMA = open_api_schema()


def walk(node: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node a value can sit at (fields, items, map values), parents first."""
    yield path or "<root>", node
    for name, prop in node.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}" if path else name)
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")


# --- generated files in step ---------------------------------------------------------------------


def test_committed_crd_is_generated_from_api_py() -> None:
    committed = CRD_FILE.read_text() if CRD_FILE.exists() else ""
    assert committed == crd_yaml(), (
        "crds/deepseekdeployments.yaml drifted from the API: run `make crds`"
    )


def test_crd_yaml_reads_back_as_the_built_crd() -> None:
    assert yaml.safe_load(crd_yaml()) == build_crd()
    assert crd_yaml() == crd_yaml()


def test_readme_reference_is_generated_from_api_py() -> None:
    readme = README.read_text() if README.exists() else ""
    try:
        expected = splice_reference(readme)
    except ValueError:
        pytest.fail(f"README.md lacks {START_MARKER} ... {END_MARKER}: add them, run `make docs`")
    assert readme == expected, "README.md's CRD reference drifted from the API: run `make docs`"


# --- structural ----------------------------------------------------------------------------------

INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]

STRUCTURAL_RULES: list[Any] = [
    pytest.param(
        lambda n: "type" in n or n.get(INT_OR_STRING) or n.get(PRESERVE),
        id="every node has a type unless it is int-or-string or keeps unknown fields",
    ),
    pytest.param(lambda n: "$ref" not in n and "$defs" not in n, id="no node keeps a $ref"),
    pytest.param(lambda n: "title" not in n, id="no node has a title"),
    pytest.param(
        lambda n: n.get("additionalProperties", True) is not False,
        id="no object is closed with additionalProperties false",
    ),
    pytest.param(
        lambda n: "propertyNames" not in n and "patternProperties" not in n,
        id="no map constrains its keys with propertyNames or patternProperties",
    ),
    pytest.param(
        lambda n: "anyOf" not in n or (n.get(INT_OR_STRING) and n["anyOf"] == INT_OR_STRING_ANY_OF),
        id="anyOf appears only as the exact int-or-string pair the API server allows",
    ),
    pytest.param(lambda n: n.get("type") != "array" or "items" in n, id="every array has items"),
    pytest.param(
        lambda n: n.get("default", 0) is not None and "nullable" not in n,
        id="no node is nullable or defaults to null",
    ),
    pytest.param(
        lambda n: all(
            type(n.get(k, True)) is bool for k in ("exclusiveMinimum", "exclusiveMaximum")
        ),
        id="exclusive bounds are OpenAPI v3.0 booleans",
    ),
    pytest.param(
        lambda n: not n.get(PRESERVE) or n.get("type") == "object",
        id="a node keeping unknown fields is an object",
    ),
]


@pytest.mark.parametrize("holds", STRUCTURAL_RULES)
def test_schema_is_structural(holds: Callable[[Schema], bool]) -> None:
    assert [path for path, node in walk(SCHEMA) if not holds(node)] == []


def test_only_affinity_keeps_unknown_fields() -> None:
    assert [path for path, node in walk(SCHEMA) if node.get(PRESERVE)] == [
        "spec.scheduling.affinity"
    ]


def test_root_declares_the_object_envelope() -> None:
    properties = SCHEMA["properties"]
    assert list(properties) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert properties["metadata"] == {"type": "object"}
    assert SCHEMA["required"] == ["spec"]


@pytest.mark.parametrize(
    "version",
    [
        pytest.param("1.30.0", id="the CRD is a valid apiextensions v1 object for Kubernetes 1.30"),
        pytest.param(
            kubernetes_validate.utils.latest_version(),
            id="the CRD is a valid apiextensions v1 object for the newest Kubernetes known",
        ),
    ],
)
def test_crd_validates_as_a_kubernetes_object(version: str) -> None:
    kubernetes_validate.validate(build_crd(), version, strict=True)


def test_crd_names_subresources_and_columns() -> None:
    spec = build_crd()["spec"]
    version = spec["versions"][0]
    assert spec["names"]["shortNames"] == ["dsd", "r1"]
    assert (spec["scope"], version["served"], version["storage"]) == ("Namespaced", True, True)
    assert version["subresources"]["scale"]["labelSelectorPath"] == ".status.selector"
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Model": ".spec.model.name",
        "Replicas": ".spec.replicas",
        "Ready": ".status.readyReplicas",
        "Phase": ".status.phase",
        "Endpoint": ".status.endpoint",
        "Age": ".metadata.creationTimestamp",
    }


# --- the schema against sample objects -----------------------------------------------------------


def draft_2020(node: Schema) -> Schema:
    """The CRD schema as JSON Schema 2020-12, strict like `kubectl --validate=strict`:
    boolean exclusive bounds become numeric, objects with fields refuse unknown ones.
    Kubernetes extensions stay (jsonschema ignores them; int-or-string is already anyOf)."""
    out = dict(node)
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(flag) is True:
            out[flag] = out.pop(bound)
    if "properties" in out:
        out["properties"] = {k: draft_2020(v) for k, v in out["properties"].items()}
        out.setdefault("additionalProperties", bool(out.get(PRESERVE)))
    if "items" in out:
        out["items"] = draft_2020(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = draft_2020(out["additionalProperties"])
    return out


VALIDATOR = jsonschema.Draft202012Validator(draft_2020(SCHEMA))


def schema_errors(obj: dict[str, Any]) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in VALIDATOR.iter_errors(obj)]


def models_accept(obj: dict[str, Any]) -> bool:
    try:
        DeepSeekDeploymentSpec.model_validate(obj["spec"])
        DeepSeekDeploymentStatus.model_validate(obj.get("status", {}))
    except pydantic.ValidationError:
        return False
    return True


SECRET = {"name": "r1-secrets", "key": "token"}
SOURCES = {
    "huggingFace": {
        "repo": "deepseek-ai/DeepSeek-R1",
        "revision": "main",
        "tokenSecretRef": SECRET,
    },
    "pvc": {"claimName": "weights", "path": "/models/r1"},
    "uri": {"uri": "s3://models/r1", "credentialsSecretRef": SECRET},
}


def make_tier(existing_claim: bool) -> dict[str, Any]:
    claim = {"existingClaim": "shared"} if existing_claim else {"storageClassName": "fast-nvme"}
    return {**claim, "size": "100Gi", "accessModes": ["ReadWriteMany"], "retainPolicy": "Retain"}


def make_full_object(source: str, existing_claims: tuple[str, ...] = ()) -> dict[str, Any]:
    """A valid object setting every field it can: one model source (they are exclusive), an
    existing claim on the tiers named in `existing_claims`, a class on the others."""
    spec = {
        "model": {
            "source": {name: body if name == source else None for name, body in SOURCES.items()},
            "dtype": "bfloat16", "quantization": "fp8",
        },
        "replicas": 2,
        "resources": {
            "gpus": 8, "cpu": "32", "memory": 549755813888,
            "extraRequests": {"ephemeral-storage": "100Gi"}, "extraLimits": {"rdma/hca": 1},
        },
        "parallelism": {"tensor": 8, "pipeline": 2, "nodes": 2},
        "engine": {
            "backend": "tensorrt", "precision": "fp8", "maxBatchTokens": 16384,
            "maxNumSeqs": 128, "maxModelLen": 65536, "gpuMemoryUtilization": 0.95,
            "buildOnStart": False,
        },
        "storage": {tier: make_tier(tier in existing_claims) for tier in ("hot", "warm", "cold")},
        "nccl": {
            "debug": "INFO", "socketIfname": "eth0", "blockingWait": True, "ibDisable": True,
            "extraEnv": {"NCCL_P2P_LEVEL": "NVL"},
        },
        "service": {"type": "LoadBalancer", "port": 8443, "annotations": {"lb": "internal"}},
        "auth": {"apiKeySecretRef": SECRET},
        "tls": {"certSecretName": "r1-tls", "clientCaSecretRef": SECRET},
        "autoscaling": {
            "minReplicas": 1, "maxReplicas": 4, "metric": "kvCacheUsage", "target": "800m",
        },
        "scheduling": {
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [
                {"key": "gpu", "operator": "Equal", "value": "h100", "effect": "NoSchedule",
                 "tolerationSeconds": 60},
            ],
            "affinity": {"nodeAffinity": {"anything": ["goes", "here"]}},
            "priorityClassName": "inference", "runtimeClassName": "nvidia",
        },
        "security": {
            "networkPolicy": {
                "enabled": True, "allowedNamespaces": ["apps"],
                "allowedPodLabels": [{"app": "chat"}], "metricsNamespaces": ["monitoring"],
            },
            "inputFilter": {"denyPatterns": ["(?i)ignore previous"], "maxPromptChars": 65536},
            "outputRedaction": {
                "builtins": ["secrets"], "patterns": [{"name": "ticket", "regex": "T-[0-9]+"}],
            },
            "audit": {"enabled": True, "includePrompts": True},
        },
        "image": {
            "repository": "registry.local/r1-runtime", "tag": "sha256:abc",
            "pullPolicy": "Always", "pullSecrets": ["registry"],
        },
    }  # fmt: skip
    status = {
        "phase": "Ready",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Serving", "message": "all good",
             "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3},
        ],
        "observedGeneration": 3, "replicas": 2, "readyReplicas": 2,
        "selector": "app.kubernetes.io/instance=r1", "endpoint": "http://r1.ml:8443",
        "engineCacheKey": "abc123",
    }  # fmt: skip
    if source == "uri":  # a pre-build Job runs one pod: a single-node replica
        spec["parallelism"] = {"tensor": 8, "pipeline": 1, "nodes": 1}
        spec["engine"] = {**spec["engine"], "prebuild": True}
    manifest = make_manifest(spec)
    return {**manifest, "status": status}


FULL_OBJECTS = [
    pytest.param(("huggingFace", ("hot",)), id="a full object with a Hugging Face source"),
    pytest.param(("pvc", ("warm", "cold")), id="a full object with a PVC source"),
    pytest.param(("uri", ()), id="a full object with a URI source"),
]


def untouched(node: Schema, value: Any, path: str) -> set[str]:
    """Field paths of `node` that `value` leaves unset (an array counts a field once set)."""
    if node.get("type") == "array":
        missed = [untouched(node["items"], item, f"{path}[]") for item in value]
        return set.intersection(*missed) if missed else {f"{path}[]"}
    out: set[str] = set()
    for name, prop in node.get("properties", {}).items():
        field = f"{path}.{name}"
        out |= untouched(prop, value[name], field) if name in value else {field}
    return out


def test_full_objects_touch_every_field() -> None:
    objects = [make_full_object(*param.values[0]) for param in FULL_OBJECTS]
    missed = [untouched(SCHEMA, obj, "") for obj in objects]
    assert set.intersection(*missed) == set()


@pytest.mark.parametrize("args", FULL_OBJECTS)
def test_full_object_is_accepted_by_schema_and_models(args: tuple[str, tuple[str, ...]]) -> None:
    obj = make_full_object(*args)
    assert schema_errors(obj) == []
    assert models_accept(obj)


MINIMAL: dict[str, Any] = {"resources": None, "engine": None}
"""Overrides that leave make_manifest's spec with its model only."""

ACCEPTED = [
    pytest.param(MINIMAL, id="the minimal object, a model and its source, is accepted"),
    pytest.param({}, id="the common object with a GPU product and a context length is accepted"),
    pytest.param({"resources": {"memory": 68719476736}}, id="memory as plain bytes is accepted"),
    pytest.param({"resources": {"cpu": "500m"}}, id="cpu in millicores is accepted"),
    pytest.param({"nccl": {"debug": ""}}, id="an empty NCCL debug level is accepted"),
    pytest.param({"scheduling": {"affinity": {"x": {"y": 1}}}}, id="any affinity is accepted"),
]


@pytest.mark.parametrize("spec", ACCEPTED)
def test_schema_and_models_accept(spec: dict[str, Any]) -> None:
    obj = make_manifest(spec)
    assert schema_errors(obj) == []
    assert schema_errors(apply_defaults(SCHEMA, obj)) == []
    assert models_accept(obj)


REJECTED = [
    pytest.param({"model": None}, id="a spec without a model is rejected"),
    pytest.param({"replicas": "two"}, id="replicas given as words is rejected"),
    pytest.param({"replicas": -1}, id="negative replicas are rejected"),
    pytest.param({"resources": {"gpus": 17}}, id="more than 16 GPUs per pod are rejected"),
    pytest.param({"engine": {"backend": "vllm"}}, id="an unknown engine backend is rejected"),
    pytest.param(
        {"engine": {"gpuMemoryUtilization": 0.1}},
        id="a GPU memory fraction at its exclusive minimum is rejected",
    ),
    pytest.param({"resources": {"memory": "64 GB"}}, id="a memory that is no quantity is rejected"),
    pytest.param(
        {"storage": {"hot": {"accessModes": []}}}, id="an empty accessModes list is rejected"
    ),
    pytest.param(
        {"storage": {"cold": {"accessModes": ["ReadWriteSometimes"]}}},
        id="an unknown access mode is rejected",
    ),
    pytest.param({"service": {"port": 70000}}, id="a port above 65535 is rejected"),
    pytest.param(
        {"model": {"source": {"huggingFace": {"repo": "no-owner"}}}},
        id="a Hugging Face repo without an owner is rejected",
    ),
    pytest.param({"nccl": {"debug": "LOUD"}}, id="an unknown NCCL debug level is rejected"),
    pytest.param({"replicaCount": 2}, id="an unknown field is rejected as by kubectl strict"),
    pytest.param(
        {"image": {"pullSecrets": ["Bad_Name"]}},
        id="a pull secret name that is no DNS name is rejected",
    ),
]


@pytest.mark.parametrize("spec", REJECTED)
def test_schema_and_models_reject(spec: dict[str, Any]) -> None:
    obj = make_manifest(spec)
    assert schema_errors(obj) != []
    assert not models_accept(obj)


@pytest.mark.parametrize(
    "status",
    [
        pytest.param({"phase": "Running"}, id="a status with an unknown phase is rejected"),
        pytest.param(
            {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t"}]},
            id="a condition without a reason is rejected",
        ),
        pytest.param({"readyReplicas": -1}, id="negative ready replicas are rejected"),
    ],
)
def test_schema_and_models_reject_status(status: dict[str, Any]) -> None:
    obj = {**make_manifest(), "status": status}
    assert schema_errors(obj) != []
    assert not models_accept(obj)


# --- defaults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "minimal", "model"),
    [
        pytest.param("spec", make_manifest(MINIMAL)["spec"], DeepSeekDeploymentSpec, id="spec"),
        pytest.param("status", {}, DeepSeekDeploymentStatus, id="status"),
    ],
)
def test_api_server_defaults_equal_pydantic_defaults(
    part: str, minimal: dict[str, Any], model: type[pydantic.BaseModel]
) -> None:
    defaulted = apply_defaults(SCHEMA["properties"][part], minimal)
    expected = model.model_validate(minimal)
    assert defaulted == expected.model_dump(by_alias=True, exclude_none=True, mode="json")


def test_every_default_is_valid_where_it_sits() -> None:
    invalid = [
        path
        for path, node in walk(SCHEMA)
        if "default" in node
        and not jsonschema.Draft202012Validator(draft_2020(node)).is_valid(
            apply_defaults(node, copy.deepcopy(node["default"]))
        )
    ]
    assert invalid == []


def test_rules_sit_on_objects_and_maps_only() -> None:
    assert [
        path for path, node in walk(SCHEMA) if VALIDATIONS in node and node.get("type") != "object"
    ] == []


# --- the reference in README.md ------------------------------------------------------------------


def test_reference_lists_every_spec_field_and_rule() -> None:
    reference = field_reference()
    spec_fields = [
        path
        for path, _ in walk(SCHEMA)
        if path.startswith("spec.") and not path.endswith(("[]", ".*"))
    ]
    missing = [path for path in spec_fields if f"`{path}`" not in reference]
    missing += [
        rule["rule"] for _, node in walk(SCHEMA) for rule in node.get(VALIDATIONS, [])
        if rule["rule"].replace("|", "\\|") not in reference
    ]  # fmt: skip
    assert missing == []


def test_splicing_the_reference_twice_changes_nothing() -> None:
    once = splice_reference(f"# t\n{START_MARKER}\nstale\n{END_MARKER}\nafter\n")
    assert splice_reference(once) == once
    assert once.endswith(f"{END_MARKER}\nafter\n") and "stale" not in once


# --- constructs a CRD cannot carry ---------------------------------------------------------------


class Pair(pydantic.BaseModel):
    span: tuple[int, int]


def test_a_construct_a_crd_cannot_express_is_refused() -> None:
    with pytest.raises(ValueError, match="span: cannot express"):
        structural_schema(Pair)
