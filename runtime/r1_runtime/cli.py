"""`r1-runtime`: the runtime's commands: serve a model, write the demo model."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from r1_runtime.config import ConfigError, RuntimeConfig
from r1_runtime.flags import add_engine_arguments, add_serve_arguments
from r1_runtime.logs import configure_logging
from r1_runtime.model_info import ModelInfo, ModelInfoError

# Kept here rather than imported from r1_runtime.demo, which pulls in torch: `--help` stays fast.
# The flag's values -> r1_runtime.demo's architecture names; the first is the default.
DEMO_ARCHITECTURES = {"deepseek-v3": "deepseek_v3", "qwen2": "qwen2"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the return value is the process exit status."""
    args = _parser().parse_args(argv)
    return int(args.command(args, sys.stdout))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1-runtime", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _add_serve(commands)
    _add_build(commands)
    _add_fetch(commands)
    _add_demo_model(commands)
    _add_verify_audit(commands)
    return parser


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Flags are the operator's contract: docs/runtime-flags.md.",
    )
    add_serve_arguments(command)
    command.set_defaults(command=_serve)


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    try:
        config = RuntimeConfig.from_args(args, os.environ)
        # Imported here: they pull in torch, which `--help` and flag errors do without.
        if config.layout.is_distributed:
            from r1_runtime.replica import serve_replica

            return serve_replica(config, os.environ)
        from r1_runtime.server.model import model_loader
        from r1_runtime.server.serve import serve

        return serve(config, model_loader(config))
    except (ConfigError, ModelInfoError) as error:
        print(f"r1-runtime serve: error: {error}", file=sys.stderr)
        return 2


TERMINATION_LOG = Path("/dev/termination-log")


def _add_build(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "build",
        help="build the engine into the engine cache (or find it there), then exit",
        description="Flags are the operator's contract: docs/runtime-flags.md; the cache: "
        "docs/engine-cache.md.",
    )
    add_engine_arguments(command)
    command.add_argument(
        "--termination-message-path",
        type=Path,
        help=f"where the result goes (default: {TERMINATION_LOG} when it is writable)",
    )
    command.set_defaults(command=_build)


def _build(args: argparse.Namespace, out: TextIO) -> int:
    """Print and record `{"engineCacheKey", "entry", "built"}`; on failure, the reason."""
    import logging

    configure_logging(args.log_dir, "build.log", required=False)
    message_path = args.termination_message_path or _writable(TERMINATION_LOG)
    try:
        config = RuntimeConfig.from_args(args, os.environ)
        if config.layout.is_distributed:
            from r1_runtime.replica import build_replica

            resolved = build_replica(config, os.environ)
        else:
            from r1_runtime.build import find_or_build_entry

            resolved = find_or_build_entry(config, ModelInfo.read(config.model))
    except (ConfigError, ModelInfoError) as error:
        return _build_failed(f"r1-runtime build: error: {error}", message_path, 2)
    except Exception as error:
        logging.getLogger(__name__).exception("building the engine failed")
        reason = f"{type(error).__name__}: {error}"
        return _build_failed(f"r1-runtime build: failed: {reason}", message_path, 1)
    if resolved is None:
        print(f"--backend {config.backend} builds no engine: nothing to cache", file=sys.stderr)
    result = {
        "engineCacheKey": resolved.key if resolved else None,
        "entry": str(resolved.entry) if resolved else None,
        "built": resolved.is_built if resolved else False,
    }
    line = json.dumps(result)
    out.write(line + "\n")
    _write_message(message_path, line)
    return 0


def _build_failed(reason: str, message_path: Path | None, status: int) -> int:
    line = " ".join(reason.split())  # one line, as the operator reads it
    print(line, file=sys.stderr)
    _write_message(message_path, line)
    return status


def _writable(path: Path) -> Path | None:
    return path if path.is_file() and os.access(path, os.W_OK) else None


def _write_message(path: Path | None, line: str) -> None:
    """The kubelet keeps at most 4096 bytes of the termination message."""
    if path is None:
        return
    try:
        path.write_text(line.encode()[:4096].decode(errors="ignore") + "\n", encoding="utf-8")
    except OSError as error:
        print(f"r1-runtime build: cannot write {path}: {error}", file=sys.stderr)


def _add_fetch(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "fetch",
        help="download a model's weights to the hot tier (verified, resumable, once per volume)",
        description="Flags are the operator's contract: docs/runtime-flags.md; docs/fetch.md.",
    )
    command.add_argument(
        "--source",
        required=True,
        help="hf://<org>/<repo>, http(s):// (a directory holding r1-manifest.json), "
        "s3://<bucket>/<prefix>, gs://<bucket>/<prefix>, oci://<registry>/<repo>:<tag>",
    )
    command.add_argument("--revision", help="branch, tag or commit (hf:// only; default main)")
    command.add_argument("--dest", required=True, type=Path, help="directory the weights go to")
    command.add_argument(
        "--credentials-file",
        type=Path,
        help="credentials for the store: a bearer token (hf, http(s)), JSON access key "
        "(s3, gs HMAC) or docker config.json (oci); docs/fetch.md",
    )
    command.set_defaults(command=_fetch)


def _fetch(args: argparse.Namespace, out: TextIO) -> int:
    from r1_runtime.fetch import FetchError, fetch, parse_source

    try:
        source = parse_source(
            args.source,
            revision=args.revision,
            credentials_file=args.credentials_file,
            env=os.environ,
        )
        fetch(source, args.dest)
    except FetchError as error:
        print(f"r1-runtime fetch: error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


def _add_demo_model(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "demo-model",
        help="write a tiny random-weight R1-shaped model and tokenizer (offline, deterministic)",
    )
    command.add_argument(
        "directory",
        nargs="?",
        type=Path,
        help="where to write it (default: .cache/demo-model for deepseek-v3, "
        ".cache/demo-model-ARCHITECTURE for another)",
    )
    command.add_argument(
        "--architecture",
        choices=list(DEMO_ARCHITECTURES),
        default="deepseek-v3",
        help="deepseek-v3: R1's own (MLA, MoE); qwen2: the R1-Distill-Qwen models'",
    )
    command.add_argument(
        "--fp8", action="store_true", help="weights in R1's fp8 block format (deepseek-v3)"
    )
    command.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    command.set_defaults(command=_demo_model)


def _demo_model(args: argparse.Namespace, out: TextIO) -> int:
    # Imported here: torch and transformers load in seconds, and only this command needs them.
    from transformers.utils import logging

    from r1_runtime.demo import build_demo_model

    if args.fp8 and args.architecture != "deepseek-v3":
        print(
            "r1-runtime demo-model: error: --fp8 needs --architecture deepseek-v3", file=sys.stderr
        )
        return 2
    logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    directory = args.directory or _default_demo_directory(args.architecture)
    arch = DEMO_ARCHITECTURES[args.architecture]
    model = build_demo_model(directory, arch=arch, seed=args.seed, fp8=args.fp8)
    out.write(
        f"wrote a {args.architecture}{' fp8' if args.fp8 else ''} demo model to "
        f"{model.directory}: "
        f"{model.num_parameters / 1e6:.1f}M parameters, vocabulary {model.vocab_size}, "
        f"bos {model.bos_token_id}, eos {model.eos_token_id}\n"
    )
    return 0


def _add_verify_audit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "verify-audit",
        help="check an audit log's hash chain (docs/security.md)",
        description="Exit 0 when every line is intact; 1 naming the first line that is not.",
    )
    command.add_argument("path", type=Path, help="an audit.jsonl file")
    command.set_defaults(command=_verify_audit)


def _verify_audit(args: argparse.Namespace, out: TextIO) -> int:
    from r1_runtime.security.audit import verify

    try:
        result = verify(args.path)
    except OSError as error:
        print(f"r1-runtime verify-audit: error: {error}", file=sys.stderr)
        return 2
    if not result.is_intact:
        print(
            f"{args.path}:{result.bad_line}: {result.problem} "
            f"({result.num_lines} lines before it are intact)",
            file=sys.stderr,
        )
        return 1
    out.write(f"{args.path}: {result.num_lines} lines intact; chain head {result.head}\n")
    return 0


def _default_demo_directory(architecture: str) -> Path:
    name = "demo-model" if architecture == "deepseek-v3" else f"demo-model-{architecture}"
    return Path(".cache") / name


if __name__ == "__main__":
    sys.exit(main())
