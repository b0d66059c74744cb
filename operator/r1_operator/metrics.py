"""The operator's own Prometheus metrics: reconciles by result, and their duration."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram, start_http_server

RECONCILES = Counter(
    "r1_operator_reconciles_total",
    "Reconciles of DeepSeekDeployments by result (ok, invalid, waiting, error).",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "r1_operator_reconcile_duration_seconds",
    "Wall time of one reconcile, API calls included.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def record(result: str, started: float) -> None:
    """Count one reconcile that began at `started` (time.monotonic())."""
    RECONCILES.labels(result=result).inc()
    RECONCILE_SECONDS.observe(time.monotonic() - started)


def serve(port: int) -> None:
    """Serve /metrics on `port` (0 turns the endpoint off)."""
    if port:
        start_http_server(port)
