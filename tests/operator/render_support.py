"""Helpers for the render tests: strict schema validation and a strategy of valid specs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes_validate
from factories import make_manifest
from hypothesis import strategies as st
from kubernetes_validate import utils as kv_utils
from r1_operator.api import DeepSeekDeployment

Manifest = dict[str, Any]

K8S_VERSIONS = ("1.30.0", kv_utils.latest_version())
"""The oldest Kubernetes we support and the newest kubernetes-validate ships."""

LWS_SPEC_KEYS = {"replicas", "leaderWorkerTemplate", "rolloutStrategy", "startupPolicy"}
LWS_TEMPLATE_KEYS = {"size", "restartPolicy", "leaderTemplate", "workerTemplate"}


def dsd(spec_overrides: dict[str, Any] | None = None, **metadata: str) -> DeepSeekDeployment:
    """The factories' valid 7B deployment, changed by `spec_overrides` (None removes)."""
    return DeepSeekDeployment.from_manifest(make_manifest(spec_overrides, **metadata))


def validate_strictly(manifest: Manifest) -> None:
    """Validate against every version in K8S_VERSIONS with unknown fields refused.

    kubernetes-validate has no LeaderWorkerSet schema: its two pod templates are validated
    as core/v1 PodTemplates and its own fields checked here.
    """
    for item in _schema_checked(manifest):
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(item, version, strict=True)


def _schema_checked(manifest: Manifest) -> Iterator[Manifest]:
    if manifest["kind"] != "LeaderWorkerSet":
        yield manifest
        return
    assert_lws_shape(manifest)
    template = manifest["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        yield {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{manifest['metadata']['name']}-{role}"},
            "template": template[role],
        }


def assert_lws_shape(lws: Manifest) -> None:
    """The fields of leaderworkerset.x-k8s.io/v1 we use, with their types and enums."""
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert set(lws) == {"apiVersion", "kind", "metadata", "spec"}
    spec = lws["spec"]
    assert set(spec) <= LWS_SPEC_KEYS
    assert isinstance(spec["replicas"], int) and spec["replicas"] >= 0
    assert spec["startupPolicy"] in ("LeaderCreated", "LeaderReady")
    rollout = spec["rolloutStrategy"]
    assert rollout["type"] == "RollingUpdate"
    assert set(rollout["rollingUpdateConfiguration"]) <= {"partition", "maxUnavailable", "maxSurge"}
    template = spec["leaderWorkerTemplate"]
    assert set(template) <= LWS_TEMPLATE_KEYS
    assert isinstance(template["size"], int) and template["size"] >= 1
    assert template["restartPolicy"] in (
        "RecreateGroupOnPodRestart",
        "RecreateGroupAfterStart",
        "None",
    )


def pod_templates(manifests: list[Manifest]) -> list[Manifest]:
    """Every pod template of the workload (one for a Deployment, two for an LWS)."""
    templates = []
    for manifest in manifests:
        if manifest["kind"] == "Deployment":
            templates.append(manifest["spec"]["template"])
        elif manifest["kind"] == "LeaderWorkerSet":
            lwt = manifest["spec"]["leaderWorkerTemplate"]
            templates += [lwt["leaderTemplate"], lwt["workerTemplate"]]
    return templates


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def container(template: Manifest, name: str = "runtime") -> Manifest:
    containers = template["spec"]["containers"] + template["spec"].get("initContainers", [])
    return next(c for c in containers if c["name"] == name)


def flag_value(args: list[str], flag: str) -> str | None:
    """The value after `flag` in an argument list, or None when the flag is absent."""
    return args[args.index(flag) + 1] if flag in args else None


# --- a strategy of valid specs ------------------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,18}[a-z0-9]", fullmatch=True)
SECRET_REFS = st.builds(
    lambda name, key: {"name": name, "key": key},
    st.sampled_from(["hf-token", "api-keys", "store.credentials"]),
    st.sampled_from(["token", "keys", "ca.crt"]),
)
SOURCES = st.one_of(
    st.builds(
        lambda repo, revision, token: {
            "huggingFace": {"repo": repo, "revision": revision}
            | ({"tokenSecretRef": token} if token else {})
        },
        st.sampled_from(["deepseek-ai/DeepSeek-R1", "org/my.model-v2", "a/.."]),
        st.sampled_from(["main", "refs/pr/1", "0123abcd"]),
        st.none() | SECRET_REFS,
    ),
    st.builds(
        lambda claim, path: {"pvc": {"claimName": claim, "path": path}},
        st.sampled_from(["weights", "models.v1"]),
        st.sampled_from(["/", "/r1", "/../x/"]),
    ),
    st.builds(
        lambda uri, creds: {
            "uri": {"uri": uri} | ({"credentialsSecretRef": creds} if creds else {})
        },
        st.sampled_from(["s3://bucket/r1", "https://example.com/m", "oci://reg/m:1"]),
        st.none() | SECRET_REFS,
    ),
)
QUANTITIES = st.sampled_from(["500m", "2", "8", "96", "1.5"])
MEMORIES = st.sampled_from(["512Mi", "4Gi", "64Gi", "1000Gi", "1e9", "3G"])
TIER = st.one_of(
    st.builds(
        lambda claim, retain: {"existingClaim": claim, "retainPolicy": retain},
        st.sampled_from(["shared-weights", "old-cache"]),
        st.sampled_from(["Retain", "Delete"]),
    ),
    st.builds(
        lambda cls, size, modes, retain: (
            {"size": size, "accessModes": modes, "retainPolicy": retain}
            | ({"storageClassName": cls} if cls is not None else {})
        ),
        st.none() | st.sampled_from(["", "fast-rwx", "standard"]),
        st.sampled_from(["1Gi", "200Gi", "1500Gi"]),
        st.lists(
            st.sampled_from(["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"]),
            min_size=1,
            max_size=2,
            unique=True,
        ),
        st.sampled_from(["Retain", "Delete"]),
    ),
)
TOLERATIONS = st.sampled_from(
    [
        {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"},
        {"operator": "Exists"},
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ]
)
AFFINITY = {
    "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": {"app": "x"}},
                },
            }
        ]
    }
}


@st.composite
def parallelism(draw: st.DrawFn) -> dict[str, Any]:
    """gpus, nodes, tensor, pipeline obeying tensor x pipeline == max(gpus, 1) x nodes."""
    gpus = draw(st.sampled_from([0, 1, 2, 4, 8]))
    nodes = draw(st.sampled_from([1, 1, 2, 3]))
    ranks = max(gpus, 1) * nodes
    tensor = draw(st.sampled_from([d for d in range(1, ranks + 1) if ranks % d == 0]))
    return {"gpus": gpus, "nodes": nodes, "tensor": tensor, "pipeline": ranks // tensor}


def shared(tier: dict[str, Any], nodes: int) -> dict[str, Any]:
    """A replica spread over several nodes needs tiers every node can mount."""
    if nodes == 1 or "accessModes" not in tier:
        return tier
    return {**tier, "accessModes": ["ReadWriteMany"]}


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid DeepSeekDeployment manifest touching every field render reads."""
    shape = draw(parallelism())
    backends = ["auto", "compile", "eager"] + (["tensorrt"] if shape["gpus"] else [])
    spec: dict[str, Any] = {
        "model": {
            "name": draw(st.sampled_from(["deepseek-ai/DeepSeek-R1", "r1-demo-tiny"])),
            "source": draw(SOURCES),
            "dtype": draw(st.sampled_from(["auto", "bfloat16", "float16", "float32"])),
            "quantization": draw(st.sampled_from([None, "fp8", "int8", "awq", "gptq"])),
        },
        "replicas": draw(st.integers(0, 5)),
        "resources": {
            "gpus": shape["gpus"],
            "gpuProduct": draw(st.none() | st.sampled_from(["NVIDIA-H100-80GB-HBM3"])),
            "cpu": draw(QUANTITIES),
            "memory": draw(MEMORIES),
            "extraRequests": draw(
                st.sampled_from([{}, {"ephemeral-storage": "20Gi"}, {"cpu": "1"}])
            ),
            "extraLimits": draw(st.sampled_from([{}, {"rdma/ib": "1"}])),
        },
        "parallelism": {key: shape[key] for key in ("tensor", "pipeline", "nodes")},
        "engine": {
            "backend": draw(st.sampled_from(backends)),
            "precision": draw(st.sampled_from(["auto", "bf16", "fp8"])),
            "maxBatchTokens": draw(st.integers(16, 1_048_576)),
            "maxNumSeqs": draw(st.integers(1, 4096)),
            "maxModelLen": draw(st.none() | st.integers(16, 1_048_576)),
            "gpuMemoryUtilization": draw(st.floats(0.11, 0.99)),
            "buildOnStart": draw(st.booleans()),
            "prebuild": shape["nodes"] == 1 and draw(st.booleans()),
        },
        "storage": {tier: shared(draw(TIER), shape["nodes"]) for tier in ("hot", "warm", "cold")},
        "nccl": {
            "debug": draw(st.sampled_from(["", "WARN", "INFO"])),
            "socketIfname": draw(st.none() | st.sampled_from(["eth0", "^lo,docker"])),
            "blockingWait": draw(st.booleans()),
            "ibDisable": draw(st.booleans()),
            "extraEnv": draw(
                st.sampled_from([{}, {"NCCL_P2P_LEVEL": "NVL", "NCCL_IB_HCA": "mlx5"}])
            ),
        },
        "service": {
            "type": draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"])),
            "port": draw(st.integers(1, 65535)),
            "annotations": draw(st.sampled_from([{}, {"example.com/lb": "internal"}])),
        },
        "scheduling": {
            "nodeSelector": draw(st.sampled_from([{}, {"pool": "gpu"}])),
            "tolerations": draw(st.lists(TOLERATIONS, max_size=2)),
            "affinity": draw(st.sampled_from([None, AFFINITY])),
            "priorityClassName": draw(st.none() | st.just("llm-serving")),
            "runtimeClassName": draw(st.none() | st.just("nvidia")),
        },
        "security": {
            "networkPolicy": {
                "enabled": draw(st.booleans()),
                "allowedNamespaces": draw(
                    st.lists(st.sampled_from(["apps", "monitoring"]), unique=True)
                ),
                "allowedPodLabels": draw(st.sampled_from([[], [{"role": "client"}]])),
                "metricsNamespaces": draw(st.sampled_from([[], ["monitoring"]])),
            },
            "inputFilter": {
                "denyPatterns": draw(st.sampled_from([[], ["(?i)ignore (all )?previous"]])),
                "maxPromptChars": draw(st.none() | st.integers(1, 1 << 20)),
            },
            "outputRedaction": {
                "builtins": draw(st.sampled_from([[], ["pii"], ["pii", "secrets"]])),
                "patterns": draw(st.sampled_from([[], [{"name": "ticket", "regex": r"T-\d{6}"}]])),
            },
            "audit": {"enabled": draw(st.booleans()), "includePrompts": draw(st.booleans())},
        },
        "image": {
            "tag": draw(st.sampled_from(["0.1.0", "sha256:" + "ab" * 32])),
            "pullPolicy": draw(st.sampled_from(["Always", "IfNotPresent", "Never"])),
            "pullSecrets": draw(st.sampled_from([[], ["registry"]])),
        },
    }
    spec |= draw(_optional_blocks())
    return {
        "apiVersion": "r1-operator.dev/v1alpha1",
        "kind": "DeepSeekDeployment",
        "metadata": {"name": draw(NAMES), "namespace": draw(NAMES)},
        "spec": _without_none(spec),
    }


@st.composite
def _optional_blocks(draw: st.DrawFn) -> dict[str, Any]:
    blocks: dict[str, Any] = {}
    if draw(st.booleans()):
        blocks["auth"] = {"apiKeySecretRef": draw(SECRET_REFS)}
    if draw(st.booleans()):
        blocks["tls"] = {"certSecretName": "r1-tls"}
        if draw(st.booleans()):
            blocks["tls"]["clientCaSecretRef"] = draw(SECRET_REFS)
    if draw(st.booleans()):
        low = draw(st.integers(1, 5))
        blocks["autoscaling"] = {
            "minReplicas": low,
            "maxReplicas": draw(st.integers(low, 10)),
            "metric": draw(st.sampled_from(["waitingRequests", "kvCacheUsage"])),
            "target": draw(st.sampled_from([None, "2", "500m"])),
        }
    return blocks


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value
