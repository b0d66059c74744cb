"""The workload: a Deployment for single-node replicas, a LeaderWorkerSet for multi-node."""

from __future__ import annotations

from r1_operator import labels
from r1_operator.api import DeepSeekDeployment
from r1_operator.render import common
from r1_operator.render.common import SERVER, Manifest, metadata
from r1_operator.render.pod import build_pod_template
from r1_operator.render.probes import progress_deadline_seconds

LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"


def build_workload(dsd: DeepSeekDeployment) -> Manifest:
    """Deployment `<name>` when parallelism.nodes == 1, else LeaderWorkerSet `<name>-lws`
    with one group of `nodes` pods per replica. Replicas are always spec.replicas: with
    autoscaling the HPA scales the DeepSeekDeployment and the operator copies them down."""
    if dsd.spec.is_multi_node:
        return build_leader_worker_set(dsd)
    return build_deployment(dsd)


def build_deployment(dsd: DeepSeekDeployment) -> Manifest:
    """apps/v1 Deployment `<name>` selecting `labels.selector_labels(name)`."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(dsd, SERVER),
        "spec": {
            "replicas": dsd.spec.replicas,
            "selector": {"matchLabels": labels.selector_labels(dsd.name)},
            # GPUs are scarce: a surge pod would wait for a free GPU that only the old pod
            # can release, so replace one pod at a time instead.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            # A first start may download the weights and build an engine (render/probes.py);
            # do not report the rollout as failed before that.
            "progressDeadlineSeconds": progress_deadline_seconds(dsd),
            "revisionHistoryLimit": 3,
            "template": build_pod_template(dsd, "server"),
        },
    }


def build_leader_worker_set(dsd: DeepSeekDeployment) -> Manifest:
    """leaderworkerset.x-k8s.io/v1 LeaderWorkerSet `<name>-lws`: spec.replicas groups of
    parallelism.nodes pods; the leader (worker index 0) serves the API."""
    meta = metadata(dsd, SERVER)
    meta["name"] = common.workload_name(dsd)
    return {
        "apiVersion": LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": meta,
        "spec": {
            "replicas": dsd.spec.replicas,
            # Workers start as soon as the leader pod exists: the leader only becomes ready
            # once every worker has joined its rendezvous, so LeaderReady would deadlock.
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "leaderWorkerTemplate": {
                "size": dsd.spec.parallelism.nodes,
                # One lost rank breaks the NCCL communicator: restart the group together.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": build_pod_template(dsd, "leader"),
                "workerTemplate": build_pod_template(dsd, "worker"),
            },
        },
    }
