"""How the operator scales: N DeepSeekDeployments against the API emulator, real kopf.

Runs tests/operator/kube_emulator.py (a real HTTP API server on loopback) and the real operator
(r1_operator.handlers under kopf) in this process, creates N deployments at once and reports:

- time to converge: until every rendered child is live with its rendered content and every
  deployment's status is written for its generation;
- API requests per deployment, by verb, made by the operator and kopf (not by this script);
- writes per no-op resync: after a quiet period, the drift timer reconciles every object
  once more; target 0;
- applies per child per generation (create, then one spec update of every deployment);
  target <= 1 for every child;
- the process's peak RSS (operator, emulator and this script share the process, so it is
  an upper bound for the operator).

    .venv/bin/python bench/operator_scale.py [--n 200] [--drift 30]

JSON goes to bench/results/operator_scale.json.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "operator"))

import prometheus_client  # noqa: E402
from factories import make_manifest  # noqa: E402
from operator_harness import (  # noqa: E402
    AGENT,
    Cluster,
    emulated_cluster,
    load_handlers,
    pytest_env,
    running_operator,
    wait_for,
)
from r1_operator import render  # noqa: E402
from r1_operator.reconcile import is_subset  # noqa: E402
from r1_operator.validation import validate  # noqa: E402

NAMESPACE = "scale"
RESULTS = ROOT / "bench" / "results" / "operator_scale.json"
UPDATE = {"spec": {"engine": {"maxNumSeqs": 32}}}
"""The spec change of the second generation: rolls the Deployment (new args)."""
Obj = dict[str, Any]


@dataclass
class Figures:
    n: int
    drift_interval_s: float
    converge_s: float
    update_converge_s: float
    create_sent_s: float
    """Of converge_s: how long this script took to send the N creates (one client, in turn)."""
    update_sent_s: float
    requests_per_deployment: dict[str, float]
    writes_per_deployment_create: dict[str, float]
    children_per_deployment: int
    applies_per_child_create: dict[str, float]
    applies_per_child_update: dict[str, float]
    resync_reconciles: int
    writes_per_noop_resync: float
    noop_writes: list[str]
    peak_rss_mib: float
    notes: list[str] = field(default_factory=list)


def run(n: int, drift: float, timeout: float) -> Figures:
    """The whole benchmark; every figure is measured from the emulator's request log."""
    env = pytest_env(R1_OPERATOR_DRIFT_INTERVAL=str(drift), R1_OPERATOR_METRICS_PORT="0")
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulated_cluster(Path(tmp)) as cluster,
        env,
        # Loaded after `env` is set: the handlers read the drift interval at import.
        # Hundreds of handlers may be mid-reconcile when the block ends.
        running_operator(load_handlers("r1_operator.handlers"), stop_timeout=120.0),
    ):
        return _measure(cluster, n, drift, timeout)


def _measure(cluster: Cluster, n: int, drift: float, timeout: float) -> Figures:
    manifests = [make_manifest(name=f"r1-{i:04d}", namespace=NAMESPACE) for i in range(n)]
    desired = [render.render(validate(m)) for m in manifests]
    children = len(desired[0])

    before, mark, started = cluster.server.request_counts(), cluster.write_mark(), time.monotonic()
    for manifest in manifests:
        cluster.create(manifest)
    create_sent_s = time.monotonic() - started
    _wait_converged(cluster, desired, 1, timeout)
    converge_s = time.monotonic() - started
    cluster.wait_quiet(1.0, timeout=timeout)
    created = _operator_requests(cluster.server.request_counts() - before)
    create_writes = cluster.writes_since(mark)

    resync = _noop_resync(cluster, n, drift, timeout)

    updated = [render.render(validate(_merged(m, UPDATE))) for m in manifests]
    mark, started = cluster.write_mark(), time.monotonic()
    for manifest in manifests:
        cluster.patch("DeepSeekDeployment", NAMESPACE, manifest["metadata"]["name"], UPDATE)
    update_sent_s = time.monotonic() - started
    _wait_converged(cluster, updated, 2, timeout)
    update_s = time.monotonic() - started
    cluster.wait_quiet(1.0, timeout=timeout)
    update_writes = cluster.writes_since(mark)

    return Figures(
        n=n,
        drift_interval_s=drift,
        converge_s=round(converge_s, 2),
        update_converge_s=round(update_s, 2),
        create_sent_s=round(create_sent_s, 2),
        update_sent_s=round(update_sent_s, 2),
        requests_per_deployment=_per(created, n),
        writes_per_deployment_create=_per(_by_target(create_writes), n),
        children_per_deployment=children,
        applies_per_child_create=_applies_per_child(create_writes, n * children),
        applies_per_child_update=_applies_per_child(update_writes, n * children),
        resync_reconciles=resync[0],
        writes_per_noop_resync=round(len(resync[1]) / n, 3),
        noop_writes=resync[1][:20],
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )


def _noop_resync(cluster: Cluster, n: int, drift: float, timeout: float) -> tuple[int, list[str]]:
    """Let the drift timer reconcile every unchanged deployment once more (at least n timer
    reconciles after a quiet period); the writes meanwhile, as `VERB path` lines."""
    cluster.wait_quiet(min(drift, 2.0), timeout=timeout)
    mark, runs = cluster.write_mark(), reconciles()
    wait_for(lambda: reconciles() >= runs + n, drift + timeout, what=f"{n} timer reconciles")
    done = int(reconciles() - runs)
    return done, [f"{w.verb} {w.path}" for w in cluster.writes_since(mark)]


def reconciles() -> float:
    """Reconciles the operator finished (its Prometheus counter, every result)."""
    sample = prometheus_client.REGISTRY.get_sample_value
    results = ("ok", "invalid", "waiting", "error")
    return sum(sample("r1_operator_reconciles_total", {"result": r}) or 0 for r in results)


def _wait_converged(
    cluster: Cluster, desired: list[list[Obj]], generation: int, timeout: float
) -> None:
    """Until every status is written for `generation` and every rendered child is live with
    its content. Polls the (small) parent list every 0.1 s and the children only then: the
    poll itself must not load the emulator the operator is measured against."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _statuses_written(cluster, len(desired), generation) and _children_live(
            cluster, desired
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"{len(desired)} deployments not converged within {timeout}s")


def _statuses_written(cluster: Cluster, n: int, generation: int) -> bool:
    parents = cluster.list("DeepSeekDeployment", NAMESPACE)
    return len(parents) == n and all(
        (p.get("status") or {}).get("observedGeneration") == generation for p in parents
    )


def _children_live(cluster: Cluster, desired: list[list[Obj]]) -> bool:
    """Every rendered child live with its rendered content."""
    live = {
        (obj["kind"], obj["metadata"]["name"]): obj
        for kind in {child["kind"] for child in desired[0]}
        for obj in cluster.list(kind, NAMESPACE)
    }
    for children in desired:
        for child in children:
            if not is_subset(child, live.get((child["kind"], child["metadata"]["name"]))):
                return False
    return True


def _operator_requests(counts: collections.Counter[tuple[str, str, str]]) -> dict[str, int]:
    by_verb: dict[str, int] = collections.Counter()
    for (agent, verb, _), count in counts.items():
        if agent != AGENT:
            by_verb[verb] += count
    return dict(by_verb)


def _by_target(writes: list[Any]) -> dict[str, int]:
    """Writes by `verb target`: target is `child`, `status` or `parent` (kopf's own)."""
    counts: dict[str, int] = collections.Counter()
    for write in writes:
        if "/events" in write.path:
            target = "event"
        elif "/deepseekdeployments/" not in write.path:
            target = "child"
        else:
            target = "status" if write.path.endswith("/status") else "parent"
        counts[f"{write.verb} {target}"] += 1
    return dict(counts)


def _applies_per_child(writes: list[Any], children: int) -> dict[str, float]:
    """Mean and max applies per child path in one generation's window."""
    per_path = collections.Counter(w.path for w in writes if w.verb == "apply")
    return {
        "mean": round(sum(per_path.values()) / children, 3),
        "max": max(per_path.values(), default=0),
        "children_applied": len(per_path),
    }


def _per(counts: dict[str, int], n: int) -> dict[str, float]:
    return {key: round(value / n, 2) for key, value in sorted(counts.items())}


def _merged(manifest: Obj, patch: Obj) -> Obj:
    from kube_emulator import merge_patch

    merged: Obj = merge_patch(manifest, patch)
    return merged


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """kopf logs every handler run at INFO; at N=200 that is thousands of lines."""
    import logging

    logger = logging.getLogger("kopf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def summary(figures: Figures) -> str:
    requests = sum(figures.requests_per_deployment.values())
    lines = [
        f"N={figures.n} DeepSeekDeployments ({figures.children_per_deployment} children each)",
        f"  converge: create {figures.converge_s} s (sending them took "
        f"{figures.create_sent_s} s); update {figures.update_converge_s} s "
        f"(sending {figures.update_sent_s} s)",
        f"  API requests per deployment (create, until quiet): {requests:.1f} "
        f"{figures.requests_per_deployment}",
        f"  writes per deployment (create): {figures.writes_per_deployment_create}",
        f"  applies per child: create {figures.applies_per_child_create}, "
        f"update {figures.applies_per_child_update}",
        f"  writes per no-op resync: {figures.writes_per_noop_resync} "
        f"({figures.resync_reconciles} timer reconciles)",
        f"  peak RSS (operator + emulator + bench, one process): {figures.peak_rss_mib} MiB",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="DeepSeekDeployments (default 200)")
    parser.add_argument(
        "--drift",
        type=float,
        default=30.0,
        help="drift timer interval, seconds (default 30; the operator's own default is 300)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    with _quiet_logs():
        figures = run(args.n, args.drift, args.timeout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    print(summary(figures))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
