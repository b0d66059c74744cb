"""The few Kubernetes API calls the reconciler makes, over the official client.

Synchronous on purpose: kopf runs sync handlers in its thread pool, so one reconcile is
plain top-to-bottom code with no event-loop juggling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from r1_operator import labels
from r1_operator.api import API_VERSION, KIND, PLURAL

REQUEST_TIMEOUT = (5, 30)
"""(connect, read) seconds: a stuck API call must fail and be retried, never hang a worker."""

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """Where one kind lives in the API."""

    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str, name: str | None = None) -> str:
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        collection = f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{collection}/{name}" if name else collection

    @property
    def group_version_path(self) -> str:
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"


CHILD_KINDS = {
    kind.kind: kind
    for kind in (
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        Kind("batch/v1", "Job", "jobs"),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets"),
        Kind("v1", "Service", "services"),
        Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    )
}
"""Every kind render() may produce; the reconciler lists and prunes exactly these."""

DEEPSEEK = Kind(API_VERSION, KIND, PLURAL)
POD = Kind("v1", "Pod", "pods")
"""Read only: the reconciler lists the pods of a deployment for status, never writes them."""


class Kube:
    """Server-side apply, list, get, delete and status patches under one field manager."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api = api_client

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account when running in a pod, else KUBECONFIG."""
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return cls(client.ApiClient())

    def get(self, kind: Kind, namespace: str, name: str) -> Manifest | None:
        try:
            return self._call("GET", kind.path(namespace, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list_children(self, kind: Kind, namespace: str, owner: str) -> list[Manifest]:
        """Objects of `kind` labelled as children of the DeepSeekDeployment `owner`."""
        selector = f"{labels.DEPLOYMENT}={owner}"
        found = self._call("GET", kind.path(namespace), query=[("labelSelector", selector)])
        return list(found.get("items") or [])

    def list_pods(self, namespace: str, owner: str) -> list[Manifest]:
        """Pods labelled as the DeepSeekDeployment `owner`'s: serving and pre-build pods."""
        return self.list_children(POD, namespace, owner)

    def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply. `force`: the operator is the only writer of the fields it
        renders, so a conflict with another manager is drift, and drift is corrected."""
        kind = CHILD_KINDS[manifest["kind"]]
        metadata = manifest["metadata"]
        return self._call(
            "PATCH",
            kind.path(metadata["namespace"], metadata["name"]),
            query=[("fieldManager", labels.FIELD_MANAGER), ("force", "true")],
            body=manifest,
            content_type="application/apply-patch+yaml",
        )

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        """Delete with background propagation; an object already gone is fine."""
        body = {"propagationPolicy": "Background"}
        try:
            self._call("DELETE", kind.path(namespace, name), body=body)
        except ApiException as error:
            if error.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, patch: Manifest) -> None:
        """JSON merge patch of the DeepSeekDeployment's status subresource; an object
        deleted meanwhile has no status to write, which is fine."""
        path = DEEPSEEK.path(namespace, name) + "/status"
        try:
            self._call("PATCH", path, body=patch, content_type="application/merge-patch+json")
        except ApiException as error:
            if error.status != 404:
                raise

    def has_api(self, kind: Kind) -> bool:
        """Whether the cluster serves `kind` (e.g. the LeaderWorkerSet CRD is installed)."""
        try:
            resources = self._call("GET", kind.group_version_path).get("resources") or []
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return any(resource.get("name") == kind.plural for resource in resources)

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Manifest | None = None,
        content_type: str = "application/json",
    ) -> Manifest:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self._api.param_serialize(
            method,
            path,
            query_params=query,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        response.read()
        result = self._api.response_deserialize(response, {"2XX": "object"}).data
        return result if isinstance(result, dict) else {}
