"""The PodDisruptionBudget that keeps voluntary evictions to one pod at a time."""

from __future__ import annotations

from r1_operator import labels
from r1_operator.api import DeepSeekDeployment
from r1_operator.render.common import SERVER, Manifest, metadata


def build_pdb(dsd: DeepSeekDeployment) -> Manifest | None:
    """PDB `<name>` (maxUnavailable 1 over all pods) when replicas > 1, else None: with a
    single replica a budget would block node drains forever. Over a multi-node deployment
    one pod down stops its whole group, so one unavailable pod is one replica down."""
    if dsd.spec.replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(dsd, SERVER),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": labels.selector_labels(dsd.name)},
        },
    }
