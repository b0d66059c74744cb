"""The Service in front of the replicas' API port."""

from __future__ import annotations

from r1_operator.api import DeepSeekDeployment
from r1_operator.render.common import (
    HTTP_PORT_NAME,
    SERVER,
    Manifest,
    metadata,
    serving_selector,
)


def build_service(dsd: DeepSeekDeployment) -> Manifest:
    """Service `<name>` on service.port, selecting the serving pods (only group leaders
    for multi-node replicas: workers serve no HTTP)."""
    service = dsd.spec.service
    port = {
        "name": HTTP_PORT_NAME,
        "port": service.port,
        "targetPort": HTTP_PORT_NAME,
        "protocol": "TCP",
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(dsd, SERVER, annotations=service.annotations),
        "spec": {"type": service.type, "selector": serving_selector(dsd), "ports": [port]},
    }
