"""The `r1-runtime` command lines: the flag contract with the runtime (docs/runtime-flags.md).

Change a flag here and in docs/runtime-flags.md together; the runtime's contract test reads
that table.
"""

from __future__ import annotations

import hashlib
import posixpath
import re

from r1_operator.api import DeepSeekDeployment
from r1_operator.render import common

RUNTIME_COMMAND = ["r1-runtime"]
LEADER_ADDRESS_ENV = "LWS_LEADER_ADDRESS"
WORKER_INDEX_ENV = "LWS_WORKER_INDEX"

AUTH_DIR = f"{common.SECRETS_DIR}/auth"
API_KEYS_FILE = f"{AUTH_DIR}/api-keys"
TLS_DIR = f"{common.SECRETS_DIR}/tls"
CLIENT_CA_DIR = f"{common.SECRETS_DIR}/client-ca"
CLIENT_CA_FILE = f"{CLIENT_CA_DIR}/ca.crt"
FETCH_CREDENTIALS_DIR = f"{common.SECRETS_DIR}/fetch"
FETCH_CREDENTIALS_FILE = f"{FETCH_CREDENTIALS_DIR}/credentials"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
"""Where `r1-runtime build` writes its JSON result; the kubelet copies it into the pod's
container status (terminated.message)."""


def model_dir(dsd: DeepSeekDeployment) -> str:
    """Directory of the weights in the pod: under /models, one directory per source so a
    new repository, revision or URI never mixes with old files on a shared hot tier."""
    source = dsd.spec.model.source
    if source.pvc:
        inside = posixpath.normpath("/" + source.pvc.path.lstrip("/"))  # stays in the claim
        return common.MODELS_DIR + (inside if inside != "/" else "")
    if source.hugging_face:
        repo = "/".join(_segment(part) for part in source.hugging_face.repo.split("/"))
        return f"{common.MODELS_DIR}/hf/{repo}/{_segment(source.hugging_face.revision)}"
    if source.uri:
        digest = hashlib.sha256(source.uri.uri.encode()).hexdigest()[:16]
        return f"{common.MODELS_DIR}/uri/{digest}"
    raise ValueError("model.source is empty")  # unreachable: ModelSource requires one


def serve_args(dsd: DeepSeekDeployment) -> list[str]:
    """Arguments of `r1-runtime serve`; the same for every pod of a replica (the node rank
    comes from the LWS_WORKER_INDEX the LeaderWorkerSet controller injects)."""
    spec, engine = dsd.spec, dsd.spec.engine
    args = ["serve", "--model", model_dir(dsd), "--served-model-name", spec.model.name]
    args += ["--host", "0.0.0.0", "--port", str(spec.service.port)]
    args += _engine_args(dsd)
    if spec.is_multi_node:
        # $(VAR) is expanded by the kubelet from the container's env.
        args += ["--nnodes", str(spec.parallelism.nodes)]
        args += ["--node-rank", f"$({WORKER_INDEX_ENV})"]
    args += ["--engine-cache", common.ENGINE_CACHE_DIR]
    if not engine.build_on_start:
        args.append("--no-build-on-start")
    return args + _security_args(dsd) + _file_args()


def build_args(dsd: DeepSeekDeployment) -> list[str]:
    """Arguments of `r1-runtime build` (the pre-build Job): serve's, less the listener,
    auth and TLS, plus where the result goes (docs/runtime-flags.md)."""
    spec = dsd.spec
    args = ["build", "--model", model_dir(dsd), "--served-model-name", spec.model.name]
    args += _engine_args(dsd)
    args += ["--engine-cache", common.ENGINE_CACHE_DIR]
    args += _file_args()
    return [*args, "--termination-message-path", TERMINATION_MESSAGE_PATH]


def _engine_args(dsd: DeepSeekDeployment) -> list[str]:
    """The flags the engine (and its cache key) depends on."""
    spec, engine = dsd.spec, dsd.spec.engine
    args = ["--backend", spec.resolved_backend.value, "--precision", engine.precision]
    args += ["--dtype", spec.model.dtype, "--max-batch-tokens", str(engine.max_batch_tokens)]
    args += ["--max-num-seqs", str(engine.max_num_seqs)]
    if engine.max_model_len is not None:
        args += ["--max-model-len", str(engine.max_model_len)]
    args += ["--gpu-memory-utilization", str(engine.gpu_memory_utilization)]
    args += ["--tensor-parallel-size", str(spec.parallelism.tensor)]
    return [*args, "--pipeline-parallel-size", str(spec.parallelism.pipeline)]


def _security_args(dsd: DeepSeekDeployment) -> list[str]:
    args = []
    if dsd.spec.auth:
        args += ["--api-key-file", API_KEYS_FILE]
    if dsd.spec.tls:
        args += ["--tls-cert", f"{TLS_DIR}/tls.crt", "--tls-key", f"{TLS_DIR}/tls.key"]
        if dsd.spec.tls.client_ca_secret_ref:
            args += ["--tls-client-ca", CLIENT_CA_FILE]
    return args


def _file_args() -> list[str]:
    settings = f"{common.CONFIG_DIR}/{common.SETTINGS_FILE}"
    return ["--settings", settings, "--log-dir", common.LOGS_DIR]


def fetch_args(dsd: DeepSeekDeployment) -> list[str] | None:
    """Arguments of the `r1-runtime fetch` init container; None for a pvc source."""
    source = dsd.spec.model.source
    dest = ["--dest", model_dir(dsd)]
    if source.hugging_face:
        hf = source.hugging_face
        return ["fetch", "--source", f"hf://{hf.repo}", "--revision", hf.revision, *dest]
    if source.uri:
        args = ["fetch", "--source", source.uri.uri, *dest]
        if source.uri.credentials_secret_ref:
            args += ["--credentials-file", FETCH_CREDENTIALS_FILE]
        return args
    return None


def _segment(text: str) -> str:
    """One safe path segment: no separators, no `.`/`..`, no characters a shell quotes."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    return f"_{safe}" if safe.startswith(".") else safe
