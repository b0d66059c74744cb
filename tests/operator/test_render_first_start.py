"""What render() gives a first start: startup budgets sized by the model, the pre-build Job,
and the security settings the runtime reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from r1_operator import labels
from r1_operator.render import args, probes, render
from r1_operator.render.configmap import runtime_settings
from render_support import (
    Manifest,
    container,
    dsd,
    flag_value,
    of_kind,
    pod_templates,
    validate_strictly,
)

R1_671B = {
    "model": {
        "name": "deepseek-ai/DeepSeek-R1",
        "source": {"huggingFace": {"repo": "deepseek-ai/DeepSeek-R1"}},
    },
    "resources": {"gpus": 8, "gpuProduct": "NVIDIA-H100-80GB-HBM3"},
    "parallelism": {"tensor": 8, "pipeline": 2, "nodes": 2},
    "engine": {"maxModelLen": 8192},
    "storage": {tier: {"accessModes": ["ReadWriteMany"]} for tier in ("hot", "warm", "cold")},
}
DISTILL_1_5B = {
    "model": {
        "name": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "source": {"huggingFace": {"repo": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"}},
    }
}
PREBUILD = {"engine": {"prebuild": True}}


def startup_probe(overrides: dict[str, Any]) -> Manifest:
    return dict(container(pod_templates(render(dsd(overrides)))[0])["startupProbe"])


# --- startup probe budgets ---------------------------------------------------------------


def test_a_1_5b_distill_gets_the_floor_and_the_671b_model_hours_more() -> None:
    small, large = dsd(DISTILL_1_5B), dsd(R1_671B)
    assert probes.startup_budget_seconds(small) == probes.FLOOR_SECONDS
    small_bytes, large_bytes = probes.weights_per_pod(small), probes.weights_per_pod(large)
    assert small_bytes and large_bytes and large_bytes > 50 * small_bytes
    budget = probes.startup_budget_seconds(large)
    assert probes.FLOOR_SECONDS + 2 * 3600 < budget <= probes.CEILING_SECONDS


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(DISTILL_1_5B, id="1.5B distill"),
        pytest.param({}, id="7B distill"),
        pytest.param(R1_671B, id="671B over 2 nodes"),
        pytest.param({"model": {"name": "someone/unknown"}}, id="a model outside the catalog"),
    ],
)
def test_the_startup_probe_allows_at_least_the_budget(overrides: dict[str, Any]) -> None:
    probe, deployment = startup_probe(overrides), dsd(overrides)
    allowed = probe["failureThreshold"] * probe["periodSeconds"]
    assert allowed >= probes.startup_budget_seconds(deployment)
    assert allowed < probes.startup_budget_seconds(deployment) + probe["periodSeconds"]


def test_the_eager_backend_builds_nothing_so_its_budget_is_smaller() -> None:
    model = {"model": {"name": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"}}
    eager = probes.startup_budget_seconds(dsd({**model, "engine": {"backend": "eager"}}))
    built = probes.startup_budget_seconds(dsd({**model, "engine": {"backend": "tensorrt"}}))
    assert probes.FLOOR_SECONDS <= eager < built


@pytest.mark.parametrize(
    "model",
    ["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"],
)
def test_the_rollout_deadline_covers_the_download_and_the_startup_budget(model: str) -> None:
    deployment = dsd({"model": {"name": model, "source": {"huggingFace": {"repo": model}}}})
    weights = probes.weights_per_pod(deployment) or 0
    download = weights / probes.DOWNLOAD_BYTES_PER_SECOND
    workload = of_kind(render(deployment), "Deployment")[0]
    deadline = workload["spec"]["progressDeadlineSeconds"]
    assert deadline >= probes.startup_budget_seconds(deployment) + download + 600


# --- the pre-build Job --------------------------------------------------------------------


def job_of(overrides: dict[str, Any], **metadata: str) -> Manifest:
    return of_kind(render(dsd({**PREBUILD, **overrides}, **metadata)), "Job")[0]


@pytest.mark.parametrize("overrides", [{}, DISTILL_1_5B, {"resources": {"gpus": 0}}])
def test_the_job_is_valid_for_kubernetes(overrides: dict[str, Any]) -> None:
    validate_strictly(job_of(overrides))


def test_no_job_without_prebuild() -> None:
    assert of_kind(render(dsd()), "Job") == []


def test_the_job_runs_build_with_a_serving_pods_image_volumes_and_gpus() -> None:
    rendered = render(dsd(PREBUILD))
    job, serving = of_kind(rendered, "Job")[0], pod_templates(rendered)[0]
    pod = job["spec"]["template"]
    build, runtime = container(pod, "build"), container(serving)
    assert pod["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1 and "ttlSecondsAfterFinished" not in job["spec"]
    assert build["args"] == args.build_args(dsd(PREBUILD))
    assert (
        flag_value(build["args"], "--termination-message-path") == build["terminationMessagePath"]
    )
    for field in ("image", "resources", "volumeMounts", "env", "securityContext"):
        assert build[field] == runtime[field], field
    assert "startupProbe" not in build and "ports" not in build
    for field in ("volumes", "nodeSelector", "tolerations", "securityContext", "initContainers"):
        assert pod["spec"][field] == serving["spec"][field], field


def test_the_build_flags_are_serves_less_the_listener_plus_the_result_file() -> None:
    deployment = dsd({**PREBUILD, "auth": {"apiKeySecretRef": {"name": "k", "key": "k"}}})
    serve = [a for a in args.serve_args(deployment)[1:] if a.startswith("--")]
    build = [a for a in args.build_args(deployment)[1:] if a.startswith("--")]
    dropped = {"--host", "--port", "--api-key-file", "--no-build-on-start"}
    assert build == [f for f in serve if f not in dropped] + ["--termination-message-path"]


def test_build_pods_match_neither_the_workload_nor_the_service() -> None:
    rendered = render(dsd(PREBUILD))
    pod_labels = of_kind(rendered, "Job")[0]["spec"]["template"]["metadata"]["labels"]
    deployment = of_kind(rendered, "Deployment")[0]
    service = of_kind(rendered, "Service")[0]
    for selector in (deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"]):
        assert not selector.items() <= pod_labels.items()
    assert pod_labels[labels.DEPLOYMENT] == "r1"


def selected_by(policy: Manifest, template: Manifest) -> bool:
    selector = policy["spec"]["podSelector"]["matchLabels"]
    return bool(selector.items() <= template["metadata"]["labels"].items())


@pytest.mark.parametrize("overrides", [{}, DISTILL_1_5B, {"resources": {"gpus": 0}}])
def test_the_build_pod_admits_no_ingress(overrides: dict[str, Any]) -> None:
    """checkov CKV2_K8S_6: every pod is selected by a NetworkPolicy. The build pod serves
    nothing; its egress stays open (it may fetch the weights)."""
    rendered = render(dsd({**PREBUILD, **overrides}))
    template = of_kind(rendered, "Job")[0]["spec"]["template"]
    [policy] = [p for p in of_kind(rendered, "NetworkPolicy") if selected_by(p, template)]
    validate_strictly(policy)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == []
    assert not any(selected_by(policy, t) for t in pod_templates(rendered))


@pytest.mark.parametrize(
    ("overrides", "policies"),
    [
        pytest.param({}, 1, id="without prebuild only the serving pods' policy"),
        pytest.param(
            {**PREBUILD, "security": {"networkPolicy": {"enabled": False}}},
            0,
            id="network policies off means none for the build pod either",
        ),
    ],
)
def test_the_build_pods_policy_comes_and_goes_with_the_job(
    overrides: dict[str, Any], policies: int
) -> None:
    assert len(of_kind(render(dsd(overrides)), "NetworkPolicy")) == policies


@pytest.mark.parametrize(
    ("change", "renamed"),
    [
        pytest.param({"engine": {"maxNumSeqs": 8}}, True, id="an engine setting renames it"),
        pytest.param({"image": {"tag": "9.9.9"}}, True, id="a new image renames it"),
        pytest.param({"replicas": 7}, False, id="the replica count keeps it"),
        pytest.param({"service": {"port": 9000}}, False, id="the service port keeps it"),
    ],
)
def test_the_job_name_follows_its_pod_template(change: dict[str, Any], renamed: bool) -> None:
    before = job_of({})["metadata"]["name"]
    after = job_of({**change, "engine": {**PREBUILD["engine"], **change.get("engine", {})}})
    assert (after["metadata"]["name"] != before) == renamed


def test_the_job_name_fits_a_label_value_for_the_longest_deployment_name() -> None:
    name = "a" * 52
    job = job_of({}, name=name)
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["name"].startswith("a" * 44 + "-prebuild-")


# --- security settings --------------------------------------------------------------------


def test_security_settings_reach_settings_json_in_the_documented_shape() -> None:
    security = {
        "inputFilter": {"denyPatterns": ["(?i)ignore previous"], "maxPromptChars": 4000},
        "outputRedaction": {
            "builtins": ["secrets", "pii", "secrets"],
            "patterns": [{"name": "ticket", "regex": "T-[0-9]+"}],
        },
        "audit": {"enabled": False, "includePrompts": True},
    }
    configmap = of_kind(render(dsd({"security": security})), "ConfigMap")[0]
    settings = json.loads(configmap["data"]["settings.json"])
    assert settings["security"] == {**security, "outputRedaction": {
        "builtins": ["pii", "secrets"], "patterns": security["outputRedaction"]["patterns"]
    }}  # fmt: skip


def test_security_defaults_are_written_out_in_full() -> None:
    assert runtime_settings(dsd())["security"] == {
        "inputFilter": {"denyPatterns": [], "maxPromptChars": None},
        "outputRedaction": {"builtins": ["pii", "secrets"], "patterns": []},
        "audit": {"enabled": True, "includePrompts": False},
    }
