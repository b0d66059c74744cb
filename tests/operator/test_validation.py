"""Bad input: every rejection names the field and says what would be valid."""

from __future__ import annotations

from typing import Any

import pytest
from factories import make_manifest
from r1_operator.problems import INVALID_SPEC, UNSCHEDULABLE
from r1_operator.validation import InvalidSpecError, validate

BAD_SPECS = [
    pytest.param(
        {"engine": {"maxBatchToken": 4096}},
        "spec.engine.maxBatchToken",
        "did you mean maxBatchTokens?",
        id="a misspelt field is unknown and the close match is suggested",
    ),
    pytest.param(
        {"replicas": "three"},
        "spec.replicas",
        "valid integer",
        id="a string where an integer belongs is a wrong type",
    ),
    pytest.param(
        {"engine": {"backend": "onnx"}},
        "spec.engine.backend",
        "'tensorrt', 'compile' or 'eager'",
        id="an unknown backend lists the valid ones",
    ),
    pytest.param(
        {"resources": {"gpus": 0}, "engine": {"backend": "tensorrt"}},
        "spec",
        "use compile or eager on CPU",
        id="tensorrt with zero GPUs points to the CPU backends",
    ),
    pytest.param(
        {"resources": {"gpus": 4}, "parallelism": {"tensor": 2}},
        "spec",
        "parallelism.tensor x parallelism.pipeline (2) must equal resources.gpus x",
        id="tensor x pipeline that does not match the GPUs is refused",
    ),
    pytest.param(
        {"model": {"source": {"uri": {"uri": "s3://bucket/r1"}}}},
        "spec.model.source",
        "set exactly one of",
        id="two model sources are refused",
    ),
    pytest.param(
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "spec.autoscaling",
        "must not exceed autoscaling.maxReplicas",
        id="minReplicas above maxReplicas is refused",
    ),
    pytest.param(
        {"storage": {"hot": {"size": "lots"}}},
        "spec.storage.hot.size",
        "should match pattern",
        id="a size that is not a quantity is refused",
    ),
    pytest.param(
        {"security": {"inputFilter": {"denyPatterns": ["secret", "x?"]}}},
        "spec.security.inputFilter.denyPatterns[1]",
        "matches the empty string, so the runtime would refuse every prompt",
        id="a deny pattern that matches the empty string is refused, by index",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "hint"), BAD_SPECS)
def test_bad_spec_names_field_and_fix(overrides: dict[str, Any], field: str, hint: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        validate(make_manifest(overrides))
    assert caught.value.reason == INVALID_SPEC
    assert [problem.field for problem in caught.value.problems] == [field]
    assert hint in caught.value.problems[0].message


def test_model_too_big_for_the_gpus_is_unschedulable_with_a_way_out() -> None:
    manifest = make_manifest(
        {
            "model": {"name": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"},
            "resources": {"gpuProduct": "NVIDIA-A10"},
        }
    )
    with pytest.raises(InvalidSpecError) as caught:
        validate(manifest)
    assert caught.value.reason == UNSCHEDULABLE
    problem = caught.value.problems[0]
    assert problem.field.startswith("spec.")
    assert "GPU" in problem.message


def test_wrong_kind_is_refused_before_the_spec_is_read() -> None:
    manifest = make_manifest()
    manifest["kind"] = "Deployment"
    with pytest.raises(InvalidSpecError, match="kind: must be DeepSeekDeployment"):
        validate(manifest)


def test_several_problems_are_all_reported() -> None:
    manifest = make_manifest({"replicas": -1, "service": {"port": 70000}})
    with pytest.raises(InvalidSpecError) as caught:
        validate(manifest)
    fields = {problem.field for problem in caught.value.problems}
    assert fields == {"spec.replicas", "spec.service.port"}


def test_valid_manifest_is_parsed_with_defaults(manifest: dict[str, Any]) -> None:
    dsd = validate(manifest)
    assert (dsd.name, dsd.namespace) == ("r1", "ml")
    assert dsd.spec.storage.hot.retain_policy == "Retain"
    assert dsd.spec.storage.cold.retain_policy == "Delete"
