"""/metrics under vLLM's names: counters move by exactly the usage the API reported,
histograms count each request, gauges show a running request and return to zero."""

from __future__ import annotations

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from .harness import MODEL, RunningServer

LABELS = {"model_name": MODEL, "engine": "0"}
VLLM_NAMES = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds_count",
    "vllm:time_per_output_token_seconds_count",
    "vllm:inter_token_latency_seconds_count",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:request_queue_time_seconds_count",
    "vllm:num_preemptions_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
]


def scrape(server: RunningServer) -> dict[str, float]:
    """Samples labelled with the served model, by name (plus the finish reason, if any)."""
    text = httpx.get(f"{server.base_url}/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if {key: sample.labels.get(key) for key in LABELS} == LABELS:
                reason = sample.labels.get("finished_reason")
                samples[f"{sample.name}{{{reason}}}" if reason else sample.name] = sample.value
    return samples


def test_every_vllm_metric_autoscalers_use_is_exported(server: RunningServer) -> None:
    assert set(VLLM_NAMES) <= set(scrape(server))


def test_counters_move_by_the_usage_the_api_reported(
    server: RunningServer, client: openai.OpenAI
) -> None:
    before = scrape(server)
    response = client.completions.create(model=MODEL, prompt="Count me", max_tokens=7)
    after = scrape(server)
    assert response.usage is not None
    moved = {name: after[name] - before.get(name, 0.0) for name in after}
    assert moved["vllm:prompt_tokens_total"] == response.usage.prompt_tokens
    assert moved["vllm:generation_tokens_total"] == response.usage.completion_tokens == 7
    assert moved["vllm:prefix_cache_queries_total"] >= response.usage.prompt_tokens
    for histogram in ("time_to_first_token", "e2e_request_latency", "request_queue_time"):
        assert moved[f"vllm:{histogram}_seconds_count"] == 1
    assert moved["vllm:inter_token_latency_seconds_count"] == 7 - 1
    # Waiting to be scheduled is one part of the time to the first token.
    waited = moved["vllm:request_queue_time_seconds_sum"]
    assert 0 <= waited < moved["vllm:time_to_first_token_seconds_sum"]
    assert moved["vllm:request_success_total{length}"] == 1
    assert after["vllm:num_requests_running"] == after["vllm:num_requests_waiting"] == 0
    assert after["vllm:kv_cache_usage_perc"] == 0


def test_gauges_show_a_running_request(server: RunningServer, http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "prompt": "Keep going",
        "max_tokens": 400,
        "temperature": 0,
        "stream": True,
    }
    with http.stream("POST", "/v1/completions", json=body) as stream:
        events = stream.iter_lines()  # NOTE: kept: a dropped iterator closes the stream
        next(events)
        during = scrape(server)
    assert during["vllm:num_requests_running"] == 1
    assert 0 < during["vllm:kv_cache_usage_perc"] <= 1


def test_each_app_has_its_own_registry(server: RunningServer) -> None:
    from prometheus_client import REGISTRY

    assert server.state.metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value("vllm:prompt_tokens_total", LABELS) is None
