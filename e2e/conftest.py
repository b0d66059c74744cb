"""Fixtures of the real-cluster suite. Every test is skipped, with the reason, unless R1_E2E=1
and a cluster is configured (KUBECONFIG, or running in a pod); docs/e2e.md says how to run it.
`make test` does not collect e2e/ (pyproject's testpaths is tests/); `make e2e` does."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from e2e_support import (
    Settings,
    apply,
    get,
    kubectl,
    operator_running,
    random_api_key,
    skip_reason,
    wait_for,
)
from r1_operator.api import DeepSeekDeployment
from r1_operator.render.pod import RUNTIME_UID, image_ref

Obj = dict[str, Any]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = skip_reason()
    if reason:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_environment()


@pytest.fixture(scope="session")
def namespace(settings: Settings) -> Iterator[str]:
    kubectl("create", "namespace", settings.namespace, check=False)
    yield settings.namespace
    if not settings.keep:
        kubectl("delete", "namespace", settings.namespace, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator(settings: Settings, namespace: str) -> Iterator[None]:
    with operator_running(settings):
        yield


@pytest.fixture(scope="module")
def manifest(settings: Settings, namespace: str) -> Obj:
    """The example, moved to the suite's namespace, with the cluster-specific overrides."""
    loaded: Obj = yaml.safe_load(settings.example.read_text())
    loaded["metadata"]["namespace"] = namespace
    spec = loaded["spec"]
    if settings.runtime_image:
        repository, _, tag = settings.runtime_image.rpartition(":")
        spec["image"] = {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}
    if settings.storage_class:
        for tier in (spec.get("storage") or {}).values():
            tier["storageClassName"] = settings.storage_class
    if settings.gpu_product and spec.get("resources", {}).get("gpus"):
        spec["resources"]["gpuProduct"] = settings.gpu_product
    DeepSeekDeployment.from_manifest(copy.deepcopy(loaded))  # fail here, not in the cluster
    return loaded


@pytest.fixture(scope="module")
def api_key(manifest: Obj) -> str | None:
    """A fresh key in the Secret spec.auth names (None when the example has no auth)."""
    ref = ((manifest["spec"].get("auth") or {}).get("apiKeySecretRef")) or None
    if ref is None:
        return None
    key = random_api_key()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ref["name"], "namespace": manifest["metadata"]["namespace"]},
        "stringData": {ref.get("key", "keys"): key + "\n"},
    }
    apply([secret])
    return key


@pytest.fixture(scope="module")
def model_claim(manifest: Obj, settings: Settings) -> None:
    """For a `source.pvc` example (the CPU demo): the claim, filled with the demo model by a
    Job running the runtime image's `r1-runtime demo-model`."""
    source = manifest["spec"]["model"]["source"].get("pvc")
    if source is None:
        return
    namespace, name = manifest["metadata"]["namespace"], source["claimName"]
    claim: Obj = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    if settings.storage_class:
        claim["spec"]["storageClassName"] = settings.storage_class
    apply([claim, demo_model_job(manifest, name)])
    kubectl(
        "-n", namespace, "wait", "--for=condition=Complete", "--timeout=900s", "job/r1-e2e-model"
    )


def demo_model_job(manifest: Obj, claim: str) -> Obj:
    image = image_ref(DeepSeekDeployment.from_manifest(copy.deepcopy(manifest)))
    container = {
        "name": "demo-model",
        "image": image,
        "imagePullPolicy": manifest["spec"].get("image", {}).get("pullPolicy", "IfNotPresent"),
        "command": ["r1-runtime", "demo-model", "/models"],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [{"name": "models", "mountPath": "/models"}],
    }
    pod = {
        "restartPolicy": "Never",
        "securityContext": {
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
        },
        "containers": [container],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": claim}}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "r1-e2e-model", "namespace": manifest["metadata"]["namespace"]},
        "spec": {"backoffLimit": 1, "template": {"spec": pod}},
    }


@pytest.fixture(scope="module")
def deployed(
    operator: None, manifest: Obj, api_key: str | None, model_claim: None
) -> Iterator[Obj]:
    """The example applied; deleted after the module if a test did not delete it."""
    apply([manifest])
    meta = manifest["metadata"]
    wait_for(
        lambda: get("deepseekdeployments.r1-operator.dev", meta["namespace"], meta["name"]),
        timeout=30,
        what="the DeepSeekDeployment stored",
    )
    yield manifest
    kubectl(
        "-n", meta["namespace"], "delete", "deepseekdeployment", meta["name"], "--ignore-not-found"
    )
