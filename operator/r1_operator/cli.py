"""`r1-operator`: render manifests, print the CRD, plan capacity (and, later, run)."""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from r1_operator import crd, planner, render
from r1_operator.problems import Problem
from r1_operator.validation import InvalidSpecError, validate

EXIT_INVALID = 1
EXIT_USAGE = 2
PRIORITY_RANGE = (1, 2**31 - 1)
"""Where a peered replica draws its kopf priority from when --priority is not given."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.command(args, sys.stdout))
    except InvalidSpecError as error:
        print(f"error: invalid DeepSeekDeployment\n{error}", file=sys.stderr)
        return EXIT_INVALID
    except (OSError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1-operator", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    render_cmd = commands.add_parser(
        "render", help="print the manifests a DeepSeekDeployment becomes"
    )
    render_cmd.add_argument("file", type=Path, help="YAML file with DeepSeekDeployments, or -")
    render_cmd.set_defaults(command=_render)

    plan_cmd = commands.add_parser("plan", help="does the model fit the GPUs it asks for?")
    plan_cmd.add_argument("file", type=Path, help="YAML file with DeepSeekDeployments, or -")
    plan_cmd.add_argument("--gpu", help="plan for this GPU (e.g. H200-141GB) instead of gpuProduct")
    plan_cmd.set_defaults(command=_plan)

    crd_cmd = commands.add_parser("crd", help="print the DeepSeekDeployment CRD")
    crd_cmd.set_defaults(command=_crd)

    run_cmd = commands.add_parser("run", help="run the operator (in-cluster or KUBECONFIG)")
    run_cmd.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch only this namespace"
    )
    run_cmd.add_argument("--liveness", default="http://0.0.0.0:8081/healthz")
    run_cmd.add_argument("--peering", help="kopf peering name for HA replicas; unset: standalone")
    run_cmd.add_argument(
        "--priority",
        type=int,
        help="kopf peering priority: the live peer with the highest serves, the others stand "
        "by, and peers of equal priority all pause; default: random when peering, so "
        "replicas of one Deployment differ",
    )
    run_cmd.set_defaults(command=_run)
    return parser


def _render(args: argparse.Namespace, out: TextIO) -> int:
    manifests = [
        manifest
        for document in _documents(args.file)
        for manifest in render.render(validate(document))
    ]
    out.write(yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True))
    return 0


def _plan(args: argparse.Namespace, out: TextIO) -> int:
    """Print the memory plan of each deployment; exit 1 when any does not fit."""
    status = 0
    for document in _documents(args.file):
        dsd = validate(document, check_fit=False)
        plan = planner.plan_for_spec(dsd.spec, args.gpu)
        if plan is None:
            out.write(f"{dsd.name}: no plan: unknown model or GPU, or no GPUs\n")
            continue
        out.write(f"{dsd.name}:\n{planner.format_plan(plan)}\n")
        status = status or (0 if plan.fits else EXIT_INVALID)
    return status


def _crd(args: argparse.Namespace, out: TextIO) -> int:
    out.write(crd.crd_yaml())
    return 0


def _run(args: argparse.Namespace, out: TextIO) -> int:
    # Imported here: render, plan and crd work without the [operator] extra installed.
    import kopf

    import r1_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=peering_priority(args.priority, args.peering),
    )
    return 0


def peering_priority(given: int | None, peering: str | None) -> int:
    """`given`, else a random draw from PRIORITY_RANGE when peering (0 when standalone).

    kopf pauses every operator that sees a live peer of the same priority ("Pausing all
    operators, including self"), so replicas started with the same arguments must differ:
    the highest serves, the others take over when its keep-alive lapses.
    """
    if given is not None:
        return given
    return random.SystemRandom().randint(*PRIORITY_RANGE) if peering else 0


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    """The non-empty YAML documents of a file (`-` reads standard input)."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    for index, document in enumerate(yaml.safe_load_all(text)):
        if document is None:
            continue
        if not isinstance(document, dict):
            raise InvalidSpecError([Problem(f"document {index}", "must be a YAML mapping")])
        yield document


if __name__ == "__main__":
    sys.exit(main())
