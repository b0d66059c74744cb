"""The flags of `r1-runtime serve` and `build`: every flag of docs/runtime-flags.md (the
operator's contract), then a few limits. `RuntimeConfig.from_args` validates what they parse.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from r1_runtime.config import API_KEYS_ENV

BACKENDS = ("tensorrt", "compile", "eager")
PRECISIONS = ("auto", "bf16", "fp16", "fp32", "fp8", "int8")
DTYPES = ("auto", "bfloat16", "float16", "float32")
DEVICES = ("cuda", "cpu")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `r1-runtime serve`: every flag of docs/runtime-flags.md, then a few limits."""
    add_engine_arguments(parser)
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="listen address")
    add("--port", type=int, default=8000, help="listen port")
    add("--nnodes", type=int, default=1, help="pods in the replica's torch.distributed group")
    add("--node-rank", type=_node_rank, default=0, help="this pod's rank; 0 serves HTTP")
    add(
        "--no-build-on-start",
        dest="build_on_start",
        action="store_false",
        help="fail instead of building when no cached engine matches",
    )
    add("--api-key-file", type=Path, help=f"API keys, one per line (also: ${API_KEYS_ENV})")
    add("--tls-cert", type=Path, help="server certificate (PEM)")
    add("--tls-key", type=Path, help="server key (PEM)")
    add("--tls-client-ca", type=Path, help="CA bundle that signs client certificates (mTLS)")
    add("--max-waiting", type=int, default=256, help="waiting queue size; beyond it: 429")
    add("--drain-timeout", type=float, default=60.0, help="seconds to finish requests on SIGTERM")
    add("--max-request-bytes", type=int, default=1 << 20, help="largest request body (413)")
    add(
        "--rendezvous-timeout",
        type=float,
        default=600.0,
        help="seconds for every rank of the replica to join (MASTER_ADDR:MASTER_PORT)",
    )
    add(
        "--collective-timeout",
        type=float,
        default=300.0,
        help="seconds one step may wait on another rank before the replica gives up",
    )


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that describe the engine, shared by `serve` and `build` (which must agree
    on the engine cache key)."""
    add = parser.add_argument
    add("--model", type=Path, required=True, help="Hugging Face checkpoint directory")
    add("--served-model-name", help="the OpenAI `model` to answer to (default: the directory)")
    add("--backend", choices=BACKENDS, default="eager")
    add("--precision", choices=PRECISIONS, default="auto", help="compute precision")
    add("--dtype", choices=DTYPES, default="auto", help="dtype the weights load in")
    add("--max-batch-tokens", type=int, default=2048, help="token budget of one engine step")
    add("--max-num-seqs", type=int, default=64, help="most sequences running at once")
    add("--max-model-len", type=int, help="longest prompt plus output (default: the model's)")
    add("--gpu-memory-utilization", type=float, default=0.9, help="in (0.1, 0.99]")
    add("--tensor-parallel-size", type=int, default=1)
    add("--pipeline-parallel-size", type=int, default=1)
    add("--device", choices=DEVICES, help="default: a GPU when one is visible, else the CPU")
    add("--engine-cache", type=Path, help="engine cache directory (shared, warm tier)")
    add("--settings", type=Path, help="settings.json from the operator's ConfigMap")
    add("--log-dir", type=Path, help="logs go to LOG_DIR/$HOSTNAME/")
    add("--num-kv-blocks", type=int, help="KV cache blocks (default: sized from free memory)")


def _node_rank(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an integer (the kubelet expands $(LWS_WORKER_INDEX) in the pod)"
        ) from None
