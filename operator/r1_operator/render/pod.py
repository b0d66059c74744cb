"""The pod template shared by the Deployment and the LeaderWorkerSet's leader and workers."""

from __future__ import annotations

import copy
from typing import Literal

from r1_operator import labels
from r1_operator.api import DeepSeekDeployment
from r1_operator.render import args, common, probes, volumes
from r1_operator.render.common import Manifest
from r1_operator.render.configmap import config_hash

Role = Literal["server", "leader", "worker", "build"]
"""`server`: a single-node replica; `leader`/`worker`: pods of a LeaderWorkerSet group;
`build`: the pre-build Job's pod."""

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
RUNTIME_CONTAINER = "runtime"
BUILD_CONTAINER = "build"
FETCH_CONTAINER = "fetch"
RUNTIME_UID = 10001
"""runtime/Dockerfile's user; 10000 or more, clear of host users (checkov CKV_K8S_40)."""
TERMINATION_GRACE_SECONDS = 120
"""Time to drain: the runtime stops taking requests on SIGTERM and finishes those running."""


def build_pod_template(dsd: DeepSeekDeployment, role: Role = "server") -> Manifest:
    """A core/v1 PodTemplateSpec. Every role runs `r1-runtime serve` with the same args;
    only `server` and `leader` expose the API port and carry probes (workers join the
    leader's torch.distributed group and serve no HTTP)."""
    annotations = {
        labels.CONFIG_HASH: config_hash(dsd),
        "kubectl.kubernetes.io/default-container": RUNTIME_CONTAINER,
    }
    return {
        "metadata": {
            "labels": labels.common_labels(dsd.name, common.SERVER),
            "annotations": annotations,
        },
        "spec": _pod_spec(dsd, role),
    }


def build_job_pod_template(dsd: DeepSeekDeployment) -> Manifest:
    """The pre-build Job's PodTemplateSpec: a serving pod's volumes, image, GPUs and
    placement, running `r1-runtime build` once (restartPolicy Never).

    NOTE: its labels leave out the serving pods' `app.kubernetes.io/name`, so neither the
    Deployment's selector nor the Service's ever matches a build pod."""
    pod_labels = labels.common_labels(dsd.name, common.PREBUILD)
    pod_labels[labels.NAME] = common.PREBUILD_APP
    return {
        "metadata": {"labels": pod_labels},
        "spec": {**_pod_spec(dsd, "build"), "restartPolicy": "Never"},
    }


def image_ref(dsd: DeepSeekDeployment) -> str:
    """`repository:tag`, or `repository@sha256:...` when the tag is a digest."""
    image = dsd.spec.image
    separator = "@" if image.tag.startswith("sha256:") else ":"
    return f"{image.repository}{separator}{image.tag}"


def _pod_spec(dsd: DeepSeekDeployment, role: Role) -> Manifest:
    spec: Manifest = {}
    fetch = _fetch_container(dsd)
    if fetch:
        spec["initContainers"] = [fetch]
    spec["containers"] = [_runtime_container(dsd, role)]
    spec["volumes"] = volumes.volumes(dsd)
    spec |= _scheduling(dsd)
    if dsd.spec.image.pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in dsd.spec.image.pull_secrets]
    spec |= {
        "automountServiceAccountToken": False,  # the runtime never calls the API server
        "enableServiceLinks": False,  # no env var per Service in the namespace
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            # Hundreds of GiB of weights: chown only when the volume root is not ours yet.
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return spec


def _runtime_container(dsd: DeepSeekDeployment, role: Role) -> Manifest:
    building = role == "build"
    container: Manifest = {
        "name": BUILD_CONTAINER if building else RUNTIME_CONTAINER,
        "image": image_ref(dsd),
        "imagePullPolicy": dsd.spec.image.pull_policy,
        "command": list(args.RUNTIME_COMMAND),
        "args": args.build_args(dsd) if building else args.serve_args(dsd),
        "env": _runtime_env(dsd),
        "resources": _resources(dsd),
        "volumeMounts": volumes.serve_mounts(dsd),
        "securityContext": _container_security(),
    }
    if building:
        container["terminationMessagePath"] = args.TERMINATION_MESSAGE_PATH
        container["terminationMessagePolicy"] = "File"
    elif role != "worker":
        port = {"name": common.HTTP_PORT_NAME, "containerPort": dsd.spec.service.port}
        container["ports"] = [{**port, "protocol": "TCP"}]
        container |= _probes(dsd)
    return container


def _fetch_container(dsd: DeepSeekDeployment) -> Manifest | None:
    fetch_args = args.fetch_args(dsd)
    if fetch_args is None:
        return None
    env: list[Manifest] = [{"name": "HOME", "value": common.TMP_DIR}]
    hf = dsd.spec.model.source.hugging_face
    if hf and hf.token_secret_ref:
        ref = {"name": hf.token_secret_ref.name, "key": hf.token_secret_ref.key}
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    resources = _resources(dsd)  # same cpu/memory: the pod's request stays the runtime's
    return {
        "name": FETCH_CONTAINER,
        "image": image_ref(dsd),
        "imagePullPolicy": dsd.spec.image.pull_policy,
        "command": list(args.RUNTIME_COMMAND),
        "args": fetch_args,
        "env": env,
        "resources": {
            kind: {key: resources[kind][key] for key in ("cpu", "memory")} for kind in resources
        },
        "volumeMounts": volumes.fetch_mounts(dsd),
        "securityContext": _container_security(),
    }


def _runtime_env(dsd: DeepSeekDeployment) -> list[Manifest]:
    """NCCL settings, extraEnv on top, rendezvous for multi-node; sorted by name."""
    nccl = dsd.spec.nccl
    # The root filesystem is read-only: HF, Triton and Inductor write caches under $HOME.
    values = {"HOME": common.TMP_DIR}
    if nccl.debug:
        values["NCCL_DEBUG"] = nccl.debug
    if nccl.socket_ifname:
        values["NCCL_SOCKET_IFNAME"] = nccl.socket_ifname
    if nccl.blocking_wait:
        # NCCL_BLOCKING_WAIT is deprecated in PyTorch; TORCH_NCCL_BLOCKING_WAIT replaces it.
        values["TORCH_NCCL_BLOCKING_WAIT"] = "1"
    if nccl.ib_disable:
        values["NCCL_IB_DISABLE"] = "1"
    values |= nccl.extra_env
    if dsd.spec.is_multi_node:
        # The LWS controller puts its variables first in env, so $(...) resolves.
        values["MASTER_ADDR"] = f"$({args.LEADER_ADDRESS_ENV})"
        values["MASTER_PORT"] = str(common.RENDEZVOUS_PORT)
    return [{"name": name, "value": value} for name, value in sorted(values.items())]


def _resources(dsd: DeepSeekDeployment) -> Manifest:
    """cpu/memory as requests and limits; extras may override them (e.g. a lower cpu
    request); GPUs last, with requests equal to limits as extended resources require."""
    resources = dsd.spec.resources
    base = {"cpu": resources.cpu, "memory": resources.memory}
    gpus = {GPU_RESOURCE: str(resources.gpus)} if resources.gpus else {}
    requests = base | resources.extra_requests | gpus
    limits = base | resources.extra_limits | gpus
    return {"requests": dict(sorted(requests.items())), "limits": dict(sorted(limits.items()))}


def _probes(dsd: DeepSeekDeployment) -> Manifest:
    scheme = "HTTPS" if dsd.spec.tls else "HTTP"

    def probe(path: str, period: int, failures: int) -> Manifest:
        get = {"path": path, "port": common.HTTP_PORT_NAME, "scheme": scheme}
        return {
            "httpGet": get,
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": failures,
        }

    return {
        "startupProbe": probe(
            "/health", probes.PROBE_PERIOD_SECONDS, probes.startup_failure_threshold(dsd)
        ),
        "readinessProbe": probe("/ready", probes.PROBE_PERIOD_SECONDS, 3),
        "livenessProbe": probe("/health", 15, 4),
    }


def _scheduling(dsd: DeepSeekDeployment) -> Manifest:
    spec, scheduling = dsd.spec, dsd.spec.scheduling
    node_selector = {}
    if spec.resources.gpu_product:
        node_selector[GPU_PRODUCT_LABEL] = spec.resources.gpu_product
    node_selector |= scheduling.node_selector
    tolerations = []
    if spec.resources.gpus:
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    tolerations += [t.model_dump(by_alias=True, exclude_none=True) for t in scheduling.tolerations]
    optional = {
        "nodeSelector": dict(sorted(node_selector.items())),
        "tolerations": tolerations,
        "affinity": copy.deepcopy(scheduling.affinity),
        "priorityClassName": scheduling.priority_class_name,
        "runtimeClassName": scheduling.runtime_class_name,
    }
    return {key: value for key, value in optional.items() if value}


def _container_security() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
