"""Prometheus metrics under vLLM's names and labels (`model_name`, `engine`), so autoscaling
rules and dashboards written for vLLM work unchanged. docs/metrics.md lists them.

Each app has its own `CollectorRegistry`: nothing lands in prometheus-client's global one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from r1_runtime.engine.stats import EngineStats

LABELS = ("model_name", "engine")
# vLLM's buckets, so histogram quantiles compare across the two servers.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TOKEN_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


class ServerMetrics:
    """The registry and the per-request observations the server makes."""

    def __init__(
        self,
        model_name: str,
        engine_stats: Callable[[], EngineStats | None],
        phase: Callable[[], str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._labels = {"model_name": model_name, "engine": "0"}
        self.prompt_tokens = self._counter("vllm:prompt_tokens", "Prefill tokens processed.")
        self.generation_tokens = self._counter(
            "vllm:generation_tokens", "Generation tokens processed."
        )
        self.ttft = self._histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS
        )
        self.inter_token = self._histogram(
            "vllm:inter_token_latency_seconds", "Inter-token latency.", TOKEN_BUCKETS
        )
        self.per_output_token = self._histogram(
            "vllm:time_per_output_token_seconds",
            "Time per output token (the same observations as vllm:inter_token_latency_seconds).",
            TOKEN_BUCKETS,
        )
        self.e2e = self._histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", REQUEST_BUCKETS
        )
        self.queue_time = self._histogram(
            "vllm:request_queue_time_seconds",
            "Time in the engine's waiting queue, until the request's first scheduled step.",
            REQUEST_BUCKETS,
        )
        self._success = Counter(
            "vllm:request_success",
            "Finished requests, by finish reason.",
            (*LABELS, "finished_reason"),
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(self._labels, engine_stats))
        if phase is not None:
            self.registry.register(PhaseCollector(self._labels, phase))

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)

    def request(self, num_prompt_tokens: int) -> RequestMetrics:
        """Start observing one admitted request (its clock started at arrival)."""
        return RequestMetrics(self, num_prompt_tokens)

    def count_finished(self, finish_reason: str) -> None:
        self._success.labels(**self._labels, finished_reason=finish_reason).inc()

    def _counter(self, name: str, documentation: str) -> Counter:
        counter = Counter(name, documentation, LABELS, registry=self.registry)
        return counter.labels(**self._labels)

    def _histogram(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
        histogram = Histogram(name, documentation, LABELS, registry=self.registry, buckets=buckets)
        return histogram.labels(**self._labels)


class RequestMetrics:
    """Timings and token counts of one request, recorded as its outputs arrive."""

    def __init__(self, metrics: ServerMetrics, num_prompt_tokens: int) -> None:
        self._metrics = metrics
        self._num_prompt_tokens = num_prompt_tokens
        self._arrival = time.monotonic()
        self._last: float | None = None

    def on_tokens(self, num_tokens: int, queue_seconds: float | None = None) -> None:
        """Record an engine output of `num_tokens` new tokens; the first one carries the time
        the request waited to be scheduled (None: it never was, e.g. aborted while waiting)."""
        now = time.monotonic()
        metrics = self._metrics
        if self._last is None:
            metrics.ttft.observe(now - self._arrival)
            if queue_seconds is not None:
                metrics.queue_time.observe(queue_seconds)
            metrics.prompt_tokens.inc(self._num_prompt_tokens)
        elif num_tokens:
            interval = (now - self._last) / num_tokens
            for _ in range(num_tokens):
                metrics.inter_token.observe(interval)
                metrics.per_output_token.observe(interval)
        metrics.generation_tokens.inc(num_tokens)
        self._last = now

    def on_finish(self, finish_reason: str) -> None:
        self._metrics.e2e.observe(time.monotonic() - self._arrival)
        self._metrics.count_finished(finish_reason)


class _EngineCollector(Collector):
    """Scheduler gauges and counters, read when Prometheus scrapes."""

    def __init__(
        self, labels: dict[str, str], engine_stats: Callable[[], EngineStats | None]
    ) -> None:
        self._labels = labels
        self._engine_stats = engine_stats

    def collect(self) -> Iterator[Metric]:
        stats = self._engine_stats() or EngineStats()
        names, values = list(self._labels), list(self._labels.values())
        gauges = {
            "vllm:num_requests_running": ("Requests in the running batch.", stats.num_running),
            "vllm:num_requests_waiting": ("Requests waiting to run.", stats.num_waiting),
            "vllm:kv_cache_usage_perc": (
                "Fraction of KV blocks in use (0-1).",
                stats.kv_cache_usage,
            ),
        }
        counters = {
            "vllm:num_preemptions": ("Preemptions (recompute).", stats.num_preemptions),
            "vllm:prefix_cache_queries": (
                "Prompt tokens looked up in the prefix cache.",
                stats.num_prefix_cache_queries,
            ),
            "vllm:prefix_cache_hits": (
                "Prompt tokens found in the prefix cache.",
                stats.num_prefix_cache_hits,
            ),
        }
        for name, (documentation, value) in gauges.items():
            gauge = GaugeMetricFamily(name, documentation, labels=names)
            gauge.add_metric(values, value)
            yield gauge
        for name, (documentation, value) in counters.items():
            counter = CounterMetricFamily(name, documentation, labels=names)
            counter.add_metric(values, value)
            yield counter


class PhaseCollector(Collector):
    """`r1_runtime:phase`: 1 for the server's current phase, 0 for the others (one series
    per phase, as kube-state-metrics does for pod phases)."""

    PHASES = ("loading", "building", "ready", "draining", "failed")

    def __init__(self, labels: dict[str, str], phase: Callable[[], str]) -> None:
        self._labels = labels
        self._phase = phase

    def collect(self) -> Iterator[Metric]:
        current = self._phase()
        gauge = GaugeMetricFamily(
            "r1_runtime:phase",
            "1 for the server's phase (loading, building, ready, draining, failed), 0 for others.",
            labels=(*self._labels, "phase"),
        )
        for phase in self.PHASES:
            gauge.add_metric((*self._labels.values(), phase), float(phase == current))
        yield gauge
