"""The pre-build Job (`spec.engine.prebuild: true`): fills the warm tier's engine cache with
`r1-runtime build` before the workload rolls out, so replicas start from the cache."""

from __future__ import annotations

import hashlib
import json

from r1_operator.api import DeepSeekDeployment
from r1_operator.render import common
from r1_operator.render.common import Manifest, metadata
from r1_operator.render.pod import build_job_pod_template

BACKOFF_LIMIT = 2
"""Retries of a failed build pod before the Job (and the deployment) is Failed."""
NAME_PREFIX_LENGTH = 44
"""`<name[:44]>-prebuild-<8 hex>` is at most 63 characters: the Job controller copies the
Job's name into a label value of its pods."""


def build_prebuild_job(dsd: DeepSeekDeployment) -> Manifest | None:
    """batch/v1 Job `<name>-prebuild-<hash>`, or None without spec.engine.prebuild.

    The hash covers the deployment's name and the whole pod template (engine settings,
    image, resources, volumes): a Job's template is immutable, so any change to it is a new
    Job, and an unchanged spec keeps the finished Job (and its result) as it is. No
    ttlSecondsAfterFinished: the operator reads the result from the finished Job's pod."""
    if not dsd.spec.engine.prebuild:
        return None
    template = build_job_pod_template(dsd)
    meta = metadata(dsd, common.PREBUILD)
    meta["name"] = job_name(dsd, template)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {"backoffLimit": BACKOFF_LIMIT, "template": template},
    }


def job_name(dsd: DeepSeekDeployment, template: Manifest) -> str:
    canonical = json.dumps([dsd.name, template], sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    return f"{dsd.name[:NAME_PREFIX_LENGTH].rstrip('-')}-{common.PREBUILD}-{digest}"
