"""Desired state: a DeepSeekDeployment rendered to the manifests of its children.

Pure: no I/O, no clock, no randomness. Two calls with equal input return equal lists in
the same order. No ownerReferences (the reconciler adds them); every object has
metadata.name, metadata.namespace and labels.common_labels.
"""

from __future__ import annotations

from r1_operator.api import DeepSeekDeployment
from r1_operator.render.autoscaling import build_hpa
from r1_operator.render.common import Manifest, serving_selector
from r1_operator.render.configmap import build_configmap
from r1_operator.render.disruption import build_pdb
from r1_operator.render.network import build_network_policy, build_prebuild_network_policy
from r1_operator.render.prebuild import build_prebuild_job
from r1_operator.render.service import build_service
from r1_operator.render.storage import build_pvcs
from r1_operator.render.workload import build_workload

__all__ = ["render", "serving_selector"]


def render(dsd: DeepSeekDeployment) -> list[Manifest]:
    """The children in apply order: ConfigMap, PVCs (hot, warm, cold), the pre-build Job
    when wanted, workload (Deployment or LeaderWorkerSet), Service, then the NetworkPolicies
    (serving pods, build pod), PDB and HPA when wanted."""
    optional = (
        build_network_policy(dsd),
        build_prebuild_network_policy(dsd),
        build_pdb(dsd),
        build_hpa(dsd),
    )
    job = build_prebuild_job(dsd)
    return [
        build_configmap(dsd),
        *build_pvcs(dsd),
        *([job] if job else []),
        build_workload(dsd),
        build_service(dsd),
        *(manifest for manifest in optional if manifest is not None),
    ]
