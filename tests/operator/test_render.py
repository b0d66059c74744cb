"""render(): every manifest valid for Kubernetes, deterministic, labelled, as the spec says."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import EXAMPLES, ROOT
from hypothesis import HealthCheck, given, settings
from r1_operator import labels
from r1_operator.api import DeepSeekDeployment
from r1_operator.render import args, render, volumes
from render_support import (
    Manifest,
    container,
    dsd,
    flag_value,
    manifests,
    of_kind,
    pod_templates,
    validate_strictly,
)

MULTI_NODE = {"resources": {"gpus": 8}, "parallelism": {"tensor": 8, "pipeline": 2, "nodes": 2}}
PVC_SOURCE = {"model": {"source": {"huggingFace": None, "pvc": {"claimName": "weights"}}}}


def load_example(path: Path) -> DeepSeekDeployment:
    return DeepSeekDeployment.from_manifest(yaml.safe_load(path.read_text()))


def assert_well_formed(dsd: DeepSeekDeployment) -> list[Manifest]:
    """The invariants every render keeps; returns the manifests for further checks."""
    rendered = render(dsd)
    assert json.dumps(rendered) == json.dumps(render(dsd)), "render is not deterministic"
    names = Counter((m["kind"], m["metadata"]["name"]) for m in rendered)
    assert max(names.values()) == 1, f"duplicate names: {names}"
    for manifest in rendered:
        validate_strictly(manifest)
        meta = manifest["metadata"]
        assert meta["namespace"] == dsd.namespace
        assert "ownerReferences" not in meta
        component = meta["labels"][labels.COMPONENT]
        assert labels.common_labels(dsd.name, component).items() <= meta["labels"].items()
    for template in pod_templates(rendered):
        assert_pod_consistent(dsd, rendered, template)
    assert_no_shared_objects(rendered)
    return rendered


def assert_no_shared_objects(value: Any, seen: set[int] | None = None) -> None:
    """No dict or list appears twice: callers may mutate one manifest safely, and YAML
    output carries no anchors."""
    seen = set() if seen is None else seen
    if isinstance(value, dict | list):
        assert id(value) not in seen, f"shared object: {value}"
        seen.add(id(value))
        for item in value.values() if isinstance(value, dict) else value:
            assert_no_shared_objects(item, seen)


def assert_pod_consistent(
    dsd: DeepSeekDeployment, rendered: list[Manifest], template: Manifest
) -> None:
    spec = template["spec"]
    volume_names = {volume["name"] for volume in spec["volumes"]}
    for each in spec["containers"] + spec.get("initContainers", []):
        assert {mount["name"] for mount in each["volumeMounts"]} <= volume_names
    has_gpu = "nvidia.com/gpu" in container(template)["resources"]["limits"]
    assert has_gpu == (dsd.spec.resources.gpus > 0)
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    ours = {pvc["metadata"]["name"] for pvc in of_kind(rendered, "PersistentVolumeClaim")}
    assert ours <= claims, "a rendered PVC is mounted by no pod"
    assert labels.common_labels(dsd.name, "server") == template["metadata"]["labels"]


# --- validity ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_renders_valid_manifests(path: Path) -> None:
    assert_well_formed(load_example(path))


def test_examples_cover_single_node_multi_node_and_cpu() -> None:
    kinds = {path.name: {m["kind"] for m in render(load_example(path))} for path in EXAMPLES}
    assert {"deepseek.yaml", "deepseek-r1-671b.yaml", "cpu-demo.yaml"} <= set(kinds)
    assert "LeaderWorkerSet" in kinds["deepseek-r1-671b.yaml"]
    assert "HorizontalPodAutoscaler" in kinds["deepseek.yaml"]


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests())
def test_any_valid_spec_renders_valid_deterministic_manifests(manifest: dict[str, Any]) -> None:
    assert_well_formed(DeepSeekDeployment.from_manifest(manifest))


def test_render_returns_fresh_objects() -> None:
    deployment = dsd({"scheduling": {"affinity": {"nodeAffinity": {}}}})
    first = render(deployment)
    pristine = copy.deepcopy(first)
    pod_templates(first)[0]["spec"]["affinity"]["mutated"] = True
    assert render(deployment) == pristine


# --- what the spec says ------------------------------------------------------------------


def _pvc_tiers(rendered: list[Manifest]) -> set[str]:
    return {
        pvc["metadata"]["labels"][labels.TIER] for pvc in of_kind(rendered, "PersistentVolumeClaim")
    }


def _volume(rendered: list[Manifest], name: str) -> Manifest:
    template = pod_templates(rendered)[0]
    return next(v for v in template["spec"]["volumes"] if v["name"] == name)


def _env(rendered: list[Manifest]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(pod_templates(rendered)[0])["env"]}


def _probe_schemes(rendered: list[Manifest]) -> set[str]:
    runtime = container(pod_templates(rendered)[0])
    return {
        runtime[p]["httpGet"]["scheme"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    }


CASES: list[Any] = [
    pytest.param(
        PVC_SOURCE,
        lambda r: (
            "hot" not in _pvc_tiers(r)
            and "initContainers" not in pod_templates(r)[0]["spec"]
            and _volume(r, "hot")["persistentVolumeClaim"]
            == {"claimName": "weights", "readOnly": True}
        ),
        id="a pvc source renders no hot PVC and no fetch container and mounts the claim read-only",
    ),
    pytest.param(
        {"storage": {"warm": {"existingClaim": "engines"}}},
        lambda r: (
            _pvc_tiers(r) == {"hot", "cold"}
            and _volume(r, "warm")["persistentVolumeClaim"]["claimName"] == "engines"
        ),
        id="an existing claim renders no PVC for its tier and the pod mounts that claim",
    ),
    pytest.param(
        {"storage": {"hot": {"retainPolicy": "Delete"}}},
        lambda r: (
            {
                p["metadata"]["labels"][labels.TIER]: p["metadata"]["labels"][labels.RETAIN]
                for p in of_kind(r, "PersistentVolumeClaim")
            }
            == {"hot": "false", "warm": "true", "cold": "false"}
        ),
        id="each PVC says by label whether it must be retained",
    ),
    pytest.param(
        MULTI_NODE,
        lambda r: (
            not of_kind(r, "Deployment")
            and of_kind(r, "LeaderWorkerSet")[0]["spec"]["leaderWorkerTemplate"]["size"] == 2
        ),
        id="two nodes render a LeaderWorkerSet of groups of two, not a Deployment",
    ),
    pytest.param(
        MULTI_NODE,
        lambda r: (
            of_kind(r, "Service")[0]["spec"]["selector"][labels.LWS_WORKER_INDEX] == "0"
            and "ports" not in container(pod_templates(r)[1])
            and _env(r)["MASTER_ADDR"] == "$(LWS_LEADER_ADDRESS)"
            and flag_value(container(pod_templates(r)[0])["args"], "--node-rank")
            == "$(LWS_WORKER_INDEX)"
        ),
        id="multi-node pods rendezvous at the leader and only the leader serves the API",
    ),
    pytest.param(
        MULTI_NODE | {"security": {"networkPolicy": {"enabled": True}}},
        lambda r: (
            {"from": [{"podSelector": {"matchLabels": labels.selector_labels("r1")}}]}
            in of_kind(r, "NetworkPolicy")[0]["spec"]["ingress"]
        ),
        id="a multi-node network policy lets the group's pods reach each other on every port",
    ),
    pytest.param(
        {"replicas": 1},
        lambda r: not of_kind(r, "PodDisruptionBudget"),
        id="one replica renders no PodDisruptionBudget",
    ),
    pytest.param(
        {"replicas": 3},
        lambda r: of_kind(r, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1,
        id="three replicas render a PodDisruptionBudget of one unavailable pod",
    ),
    pytest.param(
        {"autoscaling": {"minReplicas": 2, "maxReplicas": 6, "metric": "kvCacheUsage"}},
        lambda r: (
            of_kind(r, "HorizontalPodAutoscaler")[0]["spec"]["scaleTargetRef"]
            == {
                "apiVersion": "r1-operator.dev/v1alpha1",
                "kind": "DeepSeekDeployment",
                "name": "r1",
            }
            and of_kind(r, "HorizontalPodAutoscaler")[0]["spec"]["metrics"][0]["pods"]
            == {
                "metric": {"name": "vllm:kv_cache_usage_perc"},
                "target": {"type": "AverageValue", "averageValue": "800m"},
            }
        ),
        id="autoscaling renders an HPA that scales the DeepSeekDeployment on a vLLM metric",
    ),
    pytest.param(
        {},
        lambda r: not of_kind(r, "HorizontalPodAutoscaler"),
        id="no autoscaling renders no HPA",
    ),
    pytest.param(
        {"nccl": {"socketIfname": "eth0", "ibDisable": True}},
        lambda r: (
            _env(r)["TORCH_NCCL_BLOCKING_WAIT"] == "1"
            and "NCCL_BLOCKING_WAIT" not in _env(r)
            and _env(r)["NCCL_SOCKET_IFNAME"] == "eth0"
            and _env(r)["NCCL_IB_DISABLE"] == "1"
        ),
        id="NCCL env uses TORCH_NCCL_BLOCKING_WAIT, never NCCL_BLOCKING_WAIT",
    ),
    pytest.param(
        {"nccl": {"debug": "", "blockingWait": False}},
        lambda r: not {"NCCL_DEBUG", "TORCH_NCCL_BLOCKING_WAIT"} & set(_env(r)),
        id="empty NCCL debug and no blocking wait leave those variables unset",
    ),
    pytest.param(
        {"tls": {"certSecretName": "r1-tls", "clientCaSecretRef": {"name": "ca", "key": "ca.crt"}}},
        lambda r: (
            _probe_schemes(r) == {"HTTPS"}
            and _volume(r, "tls")["secret"]["secretName"] == "r1-tls"
            and {"name": "tls", "mountPath": args.TLS_DIR, "readOnly": True}
            in container(pod_templates(r)[0])["volumeMounts"]
            and flag_value(container(pod_templates(r)[0])["args"], "--tls-client-ca")
            == args.CLIENT_CA_FILE
        ),
        id="TLS gives HTTPS probes and mounts the certificate secret read-only",
    ),
    pytest.param(
        {},
        lambda r: _probe_schemes(r) == {"HTTP"},
        id="without TLS the probes use HTTP",
    ),
    pytest.param(
        {"model": {"source": {"huggingFace": {"tokenSecretRef": {"name": "hf", "key": "token"}}}}},
        lambda r: (
            container(pod_templates(r)[0], "fetch")["env"][1]
            == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
        ),
        id="a Hugging Face token reaches the fetch container as HF_TOKEN from its secret",
    ),
    pytest.param(
        {"image": {"tag": "sha256:" + "0" * 64}},
        lambda r: (
            container(pod_templates(r)[0])["image"]
            == "ghcr.io/r1-operator/r1-runtime@sha256:" + "0" * 64
        ),
        id="a digest tag pins the image by digest",
    ),
    pytest.param(
        {"security": {"networkPolicy": {"enabled": False}}},
        lambda r: not of_kind(r, "NetworkPolicy"),
        id="a disabled network policy renders none",
    ),
    pytest.param(
        {"resources": {"memory": "64Gi"}},
        lambda r: _volume(r, "shm")["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"},
        id="shared memory is capped at half the pod memory",
    ),
]


@pytest.mark.parametrize(("overrides", "holds"), CASES)
def test_render(overrides: dict[str, Any], holds: Callable[[list[Manifest]], bool]) -> None:
    rendered = assert_well_formed(dsd(overrides))
    assert holds(rendered)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="a single-node deployment"),
        pytest.param(MULTI_NODE, id="a multi-node deployment's leader and workers"),
        pytest.param({"engine": {"prebuild": True}}, id="the pre-build Job"),
    ],
)
def test_every_pod_runs_as_a_high_non_root_uid(overrides: dict[str, Any]) -> None:
    """UIDs under 10000 may belong to host users (checkov CKV_K8S_40)."""
    rendered = render(dsd(overrides))
    jobs = [job["spec"]["template"] for job in of_kind(rendered, "Job")]
    for template in pod_templates(rendered) + jobs:
        context = template["spec"]["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] >= 10000
        assert context["runAsGroup"] == context["fsGroup"] == context["runAsUser"]


@pytest.mark.parametrize(
    "security",
    [
        pytest.param({"inputFilter": {"denyPatterns": ["x"]}}, id="a deny pattern"),
        pytest.param({"inputFilter": {"maxPromptChars": 100}}, id="a prompt limit"),
        pytest.param({"outputRedaction": {"builtins": []}}, id="no builtin redactions"),
        pytest.param({"audit": {"includePrompts": True}}, id="prompts in the audit log"),
    ],
)
def test_changing_a_security_setting_changes_the_config_hash(security: dict[str, Any]) -> None:
    def config_hash(overrides: dict[str, Any]) -> str:
        template = pod_templates(render(dsd(overrides)))[0]
        return str(template["metadata"]["annotations"][labels.CONFIG_HASH])

    assert config_hash({"security": security}) != config_hash({})


@pytest.mark.parametrize(
    ("gpus", "backend"),
    [
        pytest.param(1, "tensorrt", id="backend auto means tensorrt with GPUs"),
        pytest.param(0, "compile", id="backend auto means compile without GPUs"),
    ],
)
def test_auto_backend(gpus: int, backend: str) -> None:
    rendered = render(dsd({"resources": {"gpus": gpus}, "engine": {"backend": "auto"}}))
    assert flag_value(container(pod_templates(rendered)[0])["args"], "--backend") == backend


# --- the runtime flag contract -------------------------------------------------------------


def _documented_flags() -> set[str]:
    text = (ROOT / "docs" / "runtime-flags.md").read_text()
    return set(re.findall(r"^\| `(--[a-z-]+)` \|", text, flags=re.MULTILINE))


def test_every_flag_the_operator_passes_is_documented() -> None:
    everything = dsd(
        MULTI_NODE
        | {
            "engine": {"buildOnStart": False},
            "auth": {"apiKeySecretRef": {"name": "k", "key": "k"}},
            "tls": {"certSecretName": "t", "clientCaSecretRef": {"name": "ca", "key": "ca"}},
        }
    )
    uri = dsd(
        {
            "model": {
                "source": {
                    "huggingFace": None,
                    "uri": {"uri": "s3://b/m", "credentialsSecretRef": {"name": "s", "key": "k"}},
                }
            }
        }
    )
    passed = {
        arg
        for each in (everything, uri)
        for arg in args.serve_args(each) + args.build_args(each) + (args.fetch_args(each) or [])
        if arg.startswith("--")
    }
    assert passed == _documented_flags()


@pytest.mark.parametrize(
    ("source", "model_dir"),
    [
        pytest.param(
            {"pvc": {"claimName": "w", "path": "/"}}, "/models", id="a pvc source at the claim root"
        ),
        pytest.param(
            {"pvc": {"claimName": "w", "path": "/../r1/"}},
            "/models/r1",
            id="a pvc path never climbs out",
        ),
        pytest.param(
            {"huggingFace": {"repo": "a/..", "revision": "refs/pr/1"}},
            "/models/hf/a/_../refs_pr_1",
            id="a Hugging Face repo and revision become safe path segments",
        ),
    ],
)
def test_model_dir(source: dict[str, Any], model_dir: str) -> None:
    deployment = DeepSeekDeployment.from_manifest(
        {
            "metadata": {"name": "r1"},
            "spec": {"model": {"name": "m", "source": source}, "resources": {"gpus": 1}},
        }
    )
    assert args.model_dir(deployment) == model_dir


@pytest.mark.parametrize(
    ("quantity", "count"),
    [
        ("64Gi", 64 * 2**30),
        ("500M", 500_000_000),
        ("1e9", 10**9),
        ("1E", 10**18),
        ("1.5", 1),
        ("250m", 0),
        ("9e999999", 2**63),
    ],
)
def test_quantity_bytes(quantity: str, count: int) -> None:
    assert volumes.quantity_bytes(quantity) == count
