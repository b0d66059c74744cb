"""The ingress NetworkPolicies of the runtime pods and of the pre-build Job's pod."""

from __future__ import annotations

from r1_operator import labels
from r1_operator.api import DeepSeekDeployment
from r1_operator.render.common import PREBUILD, PREBUILD_APP, SERVER, Manifest, metadata

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def build_network_policy(dsd: DeepSeekDeployment) -> Manifest | None:
    """NetworkPolicy `<name>` when security.networkPolicy.enabled, else None.

    The API port admits the allowed namespaces, the allowed pods of this namespace and the
    metrics namespaces; nothing else (an empty allow list admits no API client). Pods of a
    multi-node deployment also reach each other on every port for NCCL and the rendezvous.
    """
    policy = dsd.spec.security.network_policy
    if not policy.enabled:
        return None
    rules = []
    peers = _api_peers(dsd)
    if peers:
        port = {"protocol": "TCP", "port": dsd.spec.service.port}
        rules.append({"from": peers, "ports": [port]})
    if dsd.spec.is_multi_node:
        rules.append({"from": [{"podSelector": _own_pods(dsd)}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(dsd, SERVER),
        "spec": {"podSelector": _own_pods(dsd), "policyTypes": ["Ingress"], "ingress": rules},
    }


def _own_pods(dsd: DeepSeekDeployment) -> Manifest:
    return {"matchLabels": labels.selector_labels(dsd.name)}


def _api_peers(dsd: DeepSeekDeployment) -> list[Manifest]:
    policy = dsd.spec.security.network_policy
    namespaces = sorted({*policy.allowed_namespaces, *policy.metrics_namespaces})
    peers: list[Manifest] = [
        {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}
        for namespace in namespaces
    ]
    peers += [
        {"podSelector": {"matchLabels": dict(sorted(pod_labels.items()))}}
        for pod_labels in policy.allowed_pod_labels
    ]
    return peers


def build_prebuild_network_policy(dsd: DeepSeekDeployment) -> Manifest | None:
    """NetworkPolicy `<name>-prebuild`, admitting no ingress to the pre-build Job's pod, when
    security.networkPolicy.enabled and engine.prebuild; else None.

    The build pod listens on nothing. Egress stays open: its init container may download
    the weights, like a serving pod's."""
    if not (dsd.spec.security.network_policy.enabled and dsd.spec.engine.prebuild):
        return None
    pods = {"matchLabels": {labels.NAME: PREBUILD_APP, labels.INSTANCE: dsd.name}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(dsd, PREBUILD, PREBUILD),
        "spec": {"podSelector": pods, "policyTypes": ["Ingress"], "ingress": []},
    }
