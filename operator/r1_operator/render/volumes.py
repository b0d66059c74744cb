"""Volumes of the runtime pod and where each container mounts them."""

from __future__ import annotations

import contextlib
import re
from decimal import Decimal, InvalidOperation

from r1_operator.api import DeepSeekDeployment, SecretKeyRef
from r1_operator.render import args, common
from r1_operator.render.common import Manifest

SECRET_MODE = 0o440
"""Secret files: readable by the owner and by fsGroup 1000 (the runtime), nobody else."""

_SUFFIX = {
    **{f"{p}i": Decimal(1024) ** (i + 1) for i, p in enumerate("KMGTPE")},
    **{p: Decimal(1000) ** (i + 1) for i, p in enumerate("kMGTPE")},
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
}


def volumes(dsd: DeepSeekDeployment) -> list[Manifest]:
    """Every volume of the pod, in a fixed order."""
    return [
        _hot_volume(dsd),
        _claim("warm", common.claim_name(dsd, "warm")),
        _claim("cold", common.claim_name(dsd, "cold")),
        {"name": "config", "configMap": {"name": common.config_map_name(dsd)}},
        {"name": "shm", "emptyDir": _shm(dsd.spec.resources.memory)},
        {"name": "tmp", "emptyDir": {}},
        *_secret_volumes(dsd),
    ]


def _secret_volumes(dsd: DeepSeekDeployment) -> list[Manifest]:
    spec = dsd.spec
    found = []
    if spec.auth:
        found.append(_secret_key("auth", spec.auth.api_key_secret_ref, "api-keys"))
    if spec.tls:
        tls_items = {"tls.crt": "tls.crt", "tls.key": "tls.key"}
        found.append(_secret("tls", spec.tls.cert_secret_name, tls_items))
        if spec.tls.client_ca_secret_ref:
            found.append(_secret_key("client-ca", spec.tls.client_ca_secret_ref, "ca.crt"))
    uri = spec.model.source.uri
    if uri and uri.credentials_secret_ref:
        found.append(_secret_key("fetch-credentials", uri.credentials_secret_ref, "credentials"))
    return found


def serve_mounts(dsd: DeepSeekDeployment) -> list[Manifest]:
    """Mounts of the `runtime` container: weights read-only, cache and logs writable."""
    spec = dsd.spec
    mounts = [
        _mount("hot", common.MODELS_DIR, read_only=True),
        _mount("warm", common.CACHE_DIR),
        _mount("cold", common.LOGS_DIR),
        _mount("config", common.CONFIG_DIR, read_only=True),
        _mount("shm", "/dev/shm"),
        _mount("tmp", common.TMP_DIR),
    ]
    if spec.auth:
        mounts.append(_mount("auth", args.AUTH_DIR, read_only=True))
    if spec.tls:
        mounts.append(_mount("tls", args.TLS_DIR, read_only=True))
        if spec.tls.client_ca_secret_ref:
            mounts.append(_mount("client-ca", args.CLIENT_CA_DIR, read_only=True))
    return mounts


def fetch_mounts(dsd: DeepSeekDeployment) -> list[Manifest]:
    """Mounts of the `fetch` init container: the hot tier writable."""
    mounts = [_mount("hot", common.MODELS_DIR), _mount("tmp", common.TMP_DIR)]
    uri = dsd.spec.model.source.uri
    if uri and uri.credentials_secret_ref:
        mounts.append(_mount("fetch-credentials", args.FETCH_CREDENTIALS_DIR, read_only=True))
    return mounts


def _hot_volume(dsd: DeepSeekDeployment) -> Manifest:
    pvc = dsd.spec.model.source.pvc
    if pvc:
        return _claim("hot", pvc.claim_name, read_only=True)
    return _claim("hot", common.claim_name(dsd, "hot"))


def _claim(name: str, claim: str, *, read_only: bool = False) -> Manifest:
    source: Manifest = {"claimName": claim}
    if read_only:
        source["readOnly"] = True
    return {"name": name, "persistentVolumeClaim": source}


def _secret(name: str, secret: str, items: dict[str, str]) -> Manifest:
    return {
        "name": name,
        "secret": {
            "secretName": secret,
            "items": [{"key": key, "path": path} for key, path in items.items()],
            "defaultMode": SECRET_MODE,
        },
    }


def _secret_key(name: str, ref: SecretKeyRef, path: str) -> Manifest:
    return _secret(name, ref.name, {ref.key: path})


def _mount(volume: str, path: str, *, read_only: bool = False) -> Manifest:
    mount: Manifest = {"name": volume, "mountPath": path}
    if read_only:
        mount["readOnly"] = True
    return mount


def _shm(memory: str) -> Manifest:
    """A memory-backed /dev/shm for NCCL and PyTorch's inter-process tensors (the container
    runtime's default is 64Mi). Its pages count against the pod's memory limit, so it is
    capped at half of the memory: enough for NCCL's buffers, and a runaway writer cannot
    take all of it from the serving process."""
    volume: Manifest = {"medium": "Memory"}
    half = quantity_bytes(memory) // 2
    if half > 0:
        volume["sizeLimit"] = format_bytes(half)
    return volume


def quantity_bytes(quantity: str) -> int:
    """A resource quantity (`64Gi`, `500M`, `1e9`) in whole units, rounded down; 0 when it
    does not parse, capped at 2**63 (a quantity like `9e99999` must not build a huge int)."""
    value = Decimal(0)
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        number = quantity.removesuffix(suffix)
        if number != quantity and re.fullmatch(r"[+-]?[0-9.]+", number):
            value = Decimal(number) * _SUFFIX[suffix]
            break
    else:
        with contextlib.suppress(InvalidOperation):
            value = Decimal(quantity)
    return int(min(max(value, Decimal(0)), Decimal(2**63)))


def format_bytes(count: int) -> str:
    """Bytes as the largest exact binary unit: 34359738368 -> `32Gi`."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = int(_SUFFIX[suffix])
        if count and count % unit == 0:
            return f"{count // unit}{suffix}"
    return str(count)
