"""The CRD's CEL rules, evaluated for real with cel-python on defaulted objects (what the
API server's rules see), against a table of cases; pydantic must give the same verdict,
so the admission rules and the operator's validators cannot drift apart."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Annotated, Any

import celpy
import pydantic
import pytest
from factories import make_manifest
from hypothesis import given, settings
from hypothesis import strategies as st
from r1_operator.api import Backend, DeepSeekDeploymentSpec
from r1_operator.crd import (
    VALIDATIONS,
    Schema,
    apply_defaults,
    open_api_schema,
    structural_schema,
)

SPEC_SCHEMA = open_api_schema()["properties"]["spec"]
Location = tuple[str, ...]


def rules_in(node: Schema, location: Location = ()) -> Iterator[tuple[Location, dict[str, str]]]:
    """Every `x-kubernetes-validations` rule under `node` with the data path it applies to;
    `[]` stands for each array item, `*` for each map value."""
    for rule in node.get(VALIDATIONS, []):
        yield location, rule
    for name, prop in node.get("properties", {}).items():
        yield from rules_in(prop, (*location, name))
    if "items" in node:
        yield from rules_in(node["items"], (*location, "[]"))
    if isinstance(node.get("additionalProperties"), dict):
        yield from rules_in(node["additionalProperties"], (*location, "*"))


RULES = list(rules_in(SPEC_SCHEMA))


def nodes_at(value: Any, location: Location) -> Iterator[Any]:
    """The values at `location`; absent optional fields have none (their rules do not run)."""
    if not location:
        yield value
        return
    head, rest = location[0], location[1:]
    if head == "[]":
        for item in value:
            yield from nodes_at(item, rest)
    elif head == "*":
        for item in value.values():
            yield from nodes_at(item, rest)
    elif isinstance(value, dict) and head in value:
        yield from nodes_at(value[head], rest)


@functools.cache
def program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def holds(rule: str, node: Any) -> bool:
    """The rule's verdict on `node` as `self`; an evaluation error fails the test."""
    result = program(rule).evaluate({"self": celpy.json_to_cel(node)})
    assert isinstance(result, celpy.celtypes.BoolType), f"{rule} gave {result!r}"
    return bool(result)


def violations(spec: dict[str, Any]) -> list[str]:
    """Messages of the rules the defaulted `spec` breaks, as the API server would list them."""
    defaulted = apply_defaults(SPEC_SCHEMA, spec)
    return [
        rule["message"]
        for location, rule in RULES
        for node in nodes_at(defaulted, location)
        if not holds(rule["rule"], node)
    ]


def pydantic_error(spec: dict[str, Any]) -> str | None:
    """pydantic's errors as `loc: message` lines, or None when it accepts `spec`."""
    try:
        DeepSeekDeploymentSpec.model_validate(spec)
    except pydantic.ValidationError as error:
        return "\n".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in error.errors())
    return None


def make_spec(**overrides: Any) -> dict[str, Any]:
    """A valid spec (one GPU, a Hugging Face source) deep-merged with `overrides`."""
    return make_manifest(overrides)["spec"]


def sources(*names: str) -> dict[str, Any]:
    bodies = {
        "huggingFace": {"repo": "deepseek-ai/R1"},
        "pvc": {"claimName": "w"},
        "uri": {"uri": "s3://b/r1"},
    }
    return {"model": {"source": {name: bodies[name] if name in names else None for name in bodies}}}


def gpus(
    per_pod: int, tensor: int = 1, pipeline: int = 1, nodes: int = 1, **engine: str
) -> dict[str, Any]:
    return {
        "resources": {"gpus": per_pod},
        "parallelism": {"tensor": tensor, "pipeline": pipeline, "nodes": nodes},
        "engine": engine,
    }


def tier(name: str, **fields: str) -> dict[str, Any]:
    return {"storage": {name: fields}}


def replicas(low: int | None, high: int) -> dict[str, Any]:
    return {"autoscaling": {"maxReplicas": high, **({} if low is None else {"minReplicas": low})}}


def extra_env(*keys: str) -> dict[str, Any]:
    return {"nccl": {"extraEnv": dict.fromkeys(keys, "1")}}


OK = None
CLAIMED = "an existing claim with a storage class is rejected"
SOURCE, RANKS, TENSORRT = "set exactly one of", "parallelism.tensor x", "engine.backend tensorrt"
REPLICAS, CLAIM, ENV = "autoscaling.minReplicas", "existingClaim and", "every key of nccl.extraEnv"
SPREAD = "storage.<tier>.accessModes"
PREBUILD = "engine.prebuild needs"


def case(overrides: dict[str, Any], broken: str | None, id: str) -> Any:
    """One row: spec overrides and how the message of the broken rule starts (OK: none)."""
    return pytest.param(overrides, broken, id=id)


CASES = [
    case(sources("huggingFace"), OK, id="one Hugging Face source is accepted"),
    case(sources("pvc"), OK, id="one PVC source is accepted"),
    case(sources("uri"), OK, id="one URI source is accepted"),
    case(sources(), SOURCE, id="no model source is rejected"),
    case(sources("huggingFace", "pvc"), SOURCE, id="two model sources are rejected"),
    case(sources("huggingFace", "pvc", "uri"), SOURCE, id="three model sources are rejected"),
    case(gpus(8, tensor=8), OK, id="tensor 8 on 8 GPUs is accepted"),
    case(gpus(8, tensor=4, pipeline=2), OK, id="tensor 4 x pipeline 2 on 8 GPUs is accepted"),
    case(gpus(4, tensor=8), RANKS, id="tensor 8 on 4 GPUs is rejected"),
    case(gpus(0, tensor=1), OK, id="a CPU pod with tensor 1 is accepted"),
    case(gpus(0, tensor=2), RANKS, id="a CPU pod with tensor 2 is rejected"),
    case(gpus(8, 8, 2, nodes=2), OK, id="2 nodes x 8 GPUs as tensor 8 x pipeline 2 is accepted"),
    case(gpus(8, 8, 1, nodes=2), RANKS, id="2 nodes x 8 GPUs with tensor 8 alone is rejected"),
    case(gpus(0, backend="tensorrt"), TENSORRT, id="tensorrt on a CPU pod is rejected"),
    case(gpus(1, backend="tensorrt"), OK, id="tensorrt on one GPU is accepted"),
    case(gpus(0, backend="compile"), OK, id="compile on a CPU pod is accepted"),
    case(gpus(0, backend="auto"), OK, id="auto on a CPU pod is accepted"),
    case(replicas(2, 2), OK, id="minReplicas equal to maxReplicas is accepted"),
    case(replicas(None, 3), OK, id="maxReplicas alone (minReplicas defaults to 1) is accepted"),
    case(replicas(5, 2), REPLICAS, id="minReplicas above maxReplicas is rejected"),
    case(tier("hot", existingClaim="w"), OK, id="an existing hot claim alone is accepted"),
    case(tier("warm", storageClassName="nvme"), OK, id="a warm class alone is accepted"),
    *[
        case(tier(name, existingClaim="w", storageClassName="n"), CLAIM, id=f"{name}: {CLAIMED}")
        for name in ("hot", "warm", "cold")
    ],
    case(
        extra_env("NCCL_P2P_LEVEL", "_x"),
        OK,
        id="extraEnv keys that are variable names are accepted",
    ),
    case(extra_env("9LIVES"), ENV, id="an extraEnv key starting with a digit is rejected"),
    case(extra_env("NCCL-DEBUG"), ENV, id="an extraEnv key with a dash is rejected"),
    case(
        {**gpus(8, 8, 2, nodes=2), **tier("warm", accessModes=["ReadWriteOnce"])},
        SPREAD,
        id="a ReadWriteOnce tier for a replica across 2 nodes is rejected",
    ),
    case(
        {
            **gpus(8, 8, 2, nodes=2),
            **tier("warm", existingClaim="w", accessModes=["ReadWriteOnce"]),
        },
        OK,
        id="an existing claim for a replica across 2 nodes is accepted",
    ),
    case(
        tier("cold", accessModes=["ReadWriteOnce"]),
        OK,
        id="a ReadWriteOnce tier for a single-node replica is accepted",
    ),
    case(
        {**gpus(8, 8), "engine": {"prebuild": True}},
        OK,
        id="a pre-build for a single-node replica is accepted",
    ),
    case(
        {
            **gpus(8, 8, 2, nodes=2),
            "engine": {"prebuild": True},
            **tier("warm", existingClaim="w"),
            **tier("hot", existingClaim="h"),
            **tier("cold", existingClaim="c"),
        },
        PREBUILD,
        id="a pre-build for a replica across 2 nodes is rejected",
    ),
]


FIELD_PATH = re.compile(r"[a-z]\w*(?:\.[a-z]\w*)+|[a-z]+[A-Z]\w*")
"""A dotted path (`parallelism.tensor`) or a camelCase field name (`existingClaim`)."""


def first_field(message: str) -> str:
    found = FIELD_PATH.search(message)
    assert found, f"no field path in {message!r}"
    return found.group()


@pytest.mark.parametrize(("overrides", "broken"), CASES)
def test_cel_rules_and_pydantic_agree(overrides: dict[str, Any], broken: str | None) -> None:
    spec = make_spec(**overrides)
    broken_rules = violations(spec)
    error = pydantic_error(spec)
    if broken is None:
        assert (broken_rules, error) == ([], None)
    else:
        assert len(broken_rules) == 1 and broken_rules[0].startswith(broken), broken_rules
        assert error is not None and first_field(broken_rules[0]) in error


def test_every_rule_is_broken_by_some_case() -> None:
    broken = {message for p in CASES for message in violations(make_spec(**p.values[0]))}
    assert broken == {rule["message"] for _, rule in RULES}


@st.composite
def parallelisms(draw: st.DrawFn) -> dict[str, Any]:
    """GPUs, parallelism and backend; tensor often fits the GPUs, often not."""
    per_pod, nodes = draw(st.integers(0, 16)), draw(st.integers(1, 4))
    pipeline = draw(st.sampled_from([1, 2, 4]))
    fitting = max(max(per_pod, 1) * nodes // pipeline, 1)
    tensor = draw(st.one_of(st.just(fitting), st.integers(1, 64)))
    backend = draw(st.sampled_from([b.value for b in Backend]))
    return gpus(per_pod, tensor, pipeline, nodes, backend=backend)


@settings(max_examples=100, deadline=None)
@given(overrides=parallelisms())
def test_cel_rules_and_pydantic_agree_on_any_parallelism(overrides: dict[str, Any]) -> None:
    spec = make_spec(**overrides)
    assert (violations(spec) == []) == (pydantic_error(spec) is None)


@settings(max_examples=50, deadline=None)
@given(low=st.integers(1, 1000), high=st.integers(1, 1000))
def test_cel_rules_and_pydantic_agree_on_any_replica_range(low: int, high: int) -> None:
    spec = make_spec(autoscaling={"minReplicas": low, "maxReplicas": high})
    assert (violations(spec) == []) == (pydantic_error(spec) is None)


# --- the rules themselves ------------------------------------------------------------------------


def resolves(node: Schema, field_path: str) -> bool:
    for name in field_path.removeprefix(".").split("."):
        node = node.get("properties", {}).get(name)
        if node is None:
            return False
    return True


def schema_at(location: Location) -> Schema:
    node = SPEC_SCHEMA
    for step in location:
        if step == "[]":
            node = node["items"]
        elif step == "*":
            node = node["additionalProperties"]
        else:
            node = node["properties"][step]
    return node


def rule_id(location: Location, rule: dict[str, str]) -> str:
    """`spec.storage.hot: existingClaim and storageClassName are exclusive`."""
    return f"{'.'.join(('spec', *location))}: {re.split('[:;(]', rule['message'])[0].strip()}"


RULE_IDS = [rule_id(location, rule) for location, rule in RULES]


@pytest.mark.parametrize(("location", "rule"), RULES, ids=RULE_IDS)
def test_rule_has_a_message_naming_a_field(location: Location, rule: dict[str, str]) -> None:
    message, node = rule.get("message", ""), schema_at(location)
    fields = FIELD_PATH.findall(message)
    named = [f for f in fields if resolves(SPEC_SCHEMA, f) or resolves(node, f)]
    assert message and named, f"{rule['rule']!r}: message {message!r} names no field"


@pytest.mark.parametrize(("location", "rule"), RULES, ids=RULE_IDS)
def test_rule_field_path_exists(location: Location, rule: dict[str, str]) -> None:
    assert "fieldPath" not in rule or resolves(schema_at(location), rule["fieldPath"])


def test_rules_are_unique_on_each_node() -> None:
    """The API server keys a node's rules by their text (x-kubernetes-list-map-keys: rule)."""
    keys = [(location, rule["rule"]) for location, rule in RULES]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("rule", "node", "expected"),
    [
        pytest.param("has(self.a)", {"a": 1}, True, id="has() sees a present field"),
        pytest.param("has(self.a)", {}, False, id="has() sees an absent field"),
        pytest.param(
            "(has(self.a) ? 1 : 0) + (has(self.b) ? 1 : 0) == 1",
            {"b": {}},
            True,
            id="ternaries add up",
        ),
        pytest.param(
            "!(has(self.a) && has(self.b))", {"a": 1, "b": 2}, False, id="negated conjunction"
        ),
        pytest.param(
            "self.a * self.b == (self.c == 0 ? 1 : self.c) * 2",
            {"a": 4, "b": 1, "c": 2},
            True,
            id="integer arithmetic",
        ),
        pytest.param(
            "self.x > 0 || self.y != 'tensorrt'",
            {"x": 0, "y": "eager"},
            True,
            id="string comparison",
        ),
        pytest.param(
            "self.all(k, k.matches('^[A-Z_]+$'))", {"NCCL_X": "1"}, True, id="all() over map keys"
        ),
        pytest.param(
            "self.all(k, k.matches('^[A-Z_]+$'))", {"nccl": "1"}, False, id="all() finds a bad key"
        ),
        pytest.param(
            "self.all(k, k.matches('^\\\\d+$'))",
            {"12": ""},
            True,
            id="an escaped backslash in a regex",
        ),
        pytest.param("self.all(k, k.matches('^a'))", {}, True, id="all() on an empty map"),
    ],
)
def test_cel_python_supports_the_constructs_the_rules_use(
    rule: str, node: Any, expected: bool
) -> None:
    assert holds(rule, node) is expected


class QuotedKeys(pydantic.BaseModel):
    env: dict[Annotated[str, pydantic.Field(pattern=r"^\d+'?$")], str]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        pytest.param(["12"], True, id="digits match a key pattern quoted into CEL"),
        pytest.param(["12'"], True, id="a quote in a key pattern survives CEL quoting"),
        pytest.param(["d"], False, id="a backslash class in a key pattern survives CEL quoting"),
    ],
)
def test_key_pattern_rule_quotes_the_pattern(keys: list[str], expected: bool) -> None:
    env = structural_schema(QuotedKeys)["properties"]["env"]
    (rule,) = env[VALIDATIONS]
    assert holds(rule["rule"], dict.fromkeys(keys, "")) is expected
