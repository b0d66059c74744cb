"""The HorizontalPodAutoscaler that scales the DeepSeekDeployment on a serving metric."""

from __future__ import annotations

from r1_operator.api import API_VERSION, KIND, AutoscalingMetric, DeepSeekDeployment
from r1_operator.render.common import SERVER, Manifest, metadata

# vLLM's metric names, so existing Prometheus adapter rules work unchanged.
METRICS = {
    AutoscalingMetric.WAITING_REQUESTS: ("vllm:num_requests_waiting", "4"),
    AutoscalingMetric.KV_CACHE_USAGE: ("vllm:kv_cache_usage_perc", "800m"),
}
"""Pods metric name and default AverageValue target per spec.autoscaling.metric."""


def build_hpa(dsd: DeepSeekDeployment) -> Manifest | None:
    """autoscaling/v2 HPA `<name>` when spec.autoscaling is set, else None. It targets the
    DeepSeekDeployment's scale subresource (the operator copies spec.replicas down to the
    workload) and averages the metric over the pods of `status.selector`."""
    autoscaling = dsd.spec.autoscaling
    if autoscaling is None:
        return None
    name, default_target = METRICS[autoscaling.metric]
    metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {
                "type": "AverageValue",
                "averageValue": autoscaling.target or default_target,
            },
        },
    }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(dsd, SERVER),
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": dsd.name},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [metric],
            "behavior": _behavior(),
        },
    }


def _behavior() -> Manifest:
    # A GPU replica takes minutes (a first engine build: much longer) to become ready, so
    # scale up one replica per 5 minutes to let each new one absorb load before adding
    # more, and scale down only after 10 minutes of low load, one replica at a time.
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 60,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 600,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
        },
    }
