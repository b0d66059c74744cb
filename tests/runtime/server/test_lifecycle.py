"""Admission and release: 503 while loading, 429 on a full waiting queue, KV blocks freed
when a client goes away, and SIGTERM draining running requests while refusing new ones."""

from __future__ import annotations

import signal
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from r1_runtime.engine_cache.resolve import PhaseCallback
from r1_runtime.server.model import LoadedModel, model_loader

from .harness import MODEL, RunningServer, make_config, running_server, wait_until

COMPLETIONS = "/v1/completions"
LONG = {"model": MODEL, "prompt": "Tell me a story", "max_tokens": 400, "temperature": 0}


def stream_body(**overrides: Any) -> dict[str, Any]:
    return {**LONG, "stream": True, **overrides}


def test_while_loading_the_process_is_alive_but_not_ready(demo_model_dir: Path) -> None:
    release = threading.Event()

    def slow_load(on_phase: PhaseCallback) -> LoadedModel:
        release.wait(30)
        return model_loader(config)(on_phase)

    config = make_config(demo_model_dir)
    with (
        running_server(
            lambda port: make_config(demo_model_dir, port=port), slow_load, wait_for_model=False
        ) as running,
        running.http() as http,
    ):
        assert http.get("/health").status_code == 200
        assert http.get("/ready").json()["error"]["code"] == "starting"
        assert http.get("/v1/models").status_code == 503
        release.set()
        wait_until(lambda: http.get("/ready").status_code == 200, 60)


def test_a_model_that_fails_to_load_stops_the_server(demo_model_dir: Path) -> None:
    def broken(on_phase: PhaseCallback) -> LoadedModel:
        raise RuntimeError("no weights")

    with running_server(
        lambda port: make_config(demo_model_dir, port=port), broken, wait_for_model=False
    ) as running:
        running.thread.join(10)
        assert not running.thread.is_alive()
        assert isinstance(running.state.load_error, RuntimeError)


def test_a_full_waiting_queue_is_a_429(server: RunningServer, http: httpx.Client) -> None:
    with ExitStack() as streams:
        for _ in range(2):  # both seats (max_num_seqs=2) taken by running streams
            streams.enter_context(http.stream("POST", COMPLETIONS, json=stream_body()))
        queued: list[httpx.Response] = []
        waiter = threading.Thread(target=lambda: queued.append(post_short(server)))
        waiter.start()
        wait_until(lambda: server.engine.scheduler.num_waiting == 1)  # max_waiting=1
        refused = http.post(COMPLETIONS, json={**LONG, "max_tokens": 1})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "queue_full"
    waiter.join(30)  # the streams closed, so the queued request ran
    assert [response.status_code for response in queued] == [200]


def post_short(server: RunningServer) -> httpx.Response:
    with server.http() as http:
        return http.post(COMPLETIONS, json={**LONG, "max_tokens": 2})


def num_aborted(server: RunningServer) -> float:
    labels = {"model_name": MODEL, "engine": "0", "finished_reason": "abort"}
    value = server.state.metrics.registry.get_sample_value("vllm:request_success_total", labels)
    return value or 0.0


def test_a_client_gone_mid_stream_frees_its_kv_blocks(server: RunningServer) -> None:
    blocks = server.engine.scheduler.block_manager
    aborted = num_aborted(server)
    with server.http() as http, http.stream("POST", COMPLETIONS, json=stream_body()) as stream:
        events = stream.iter_lines()
        for _ in range(6):
            next(events)
        assert server.engine.scheduler.num_running == 1
        assert blocks.num_free_blocks < blocks.num_blocks
    wait_until(server.is_idle_with_all_blocks_free, 5)
    assert num_aborted(server) == aborted + 1  # freed by the abort, not by finishing


def test_a_client_gone_before_a_whole_answer_frees_its_kv_blocks(server: RunningServer) -> None:
    aborted = num_aborted(server)
    with server.http(timeout=0.3) as http:
        try:
            http.post(COMPLETIONS, json=LONG)
        except httpx.ReadTimeout:
            pass
        else:
            raise AssertionError("400 tokens came back within 0.3 s")
    wait_until(server.is_idle_with_all_blocks_free, 5)
    assert num_aborted(server) == aborted + 1


def test_sigterm_finishes_running_requests_and_refuses_new_ones(demo_model_dir: Path) -> None:
    with running_server(lambda port: make_config(demo_model_dir, port=port)) as running:
        with (
            running.http() as http,
            http.stream("POST", COMPLETIONS, json=stream_body(max_tokens=40)) as stream,
        ):
            events = stream.iter_lines()
            next(events)
            running.server.handle_exit(signal.SIGTERM, None)
            assert http.get("/ready").json()["error"]["code"] == "draining"
            refused = http.post(COMPLETIONS, json={**LONG, "max_tokens": 1})
            assert (refused.status_code, refused.json()["error"]["code"]) == (503, "draining")
            rest = [line for line in events if line]
        assert rest[-1] == "data: [DONE]"
        assert '"finish_reason":"length"' in rest[-2]
        running.thread.join(15)
        assert not running.thread.is_alive()


def test_a_drain_past_its_timeout_aborts_what_is_left(demo_model_dir: Path) -> None:
    config = {"drain_timeout": 0.2}
    with running_server(lambda port: make_config(demo_model_dir, port=port, **config)) as running:
        with running.http() as http, http.stream("POST", COMPLETIONS, json=stream_body()) as s:
            events = s.iter_lines()
            next(events)
            running.server.handle_exit(signal.SIGTERM, None)
            rest = [line for line in events if line]
        assert '"finish_reason":"abort"' in rest[-2]
        running.thread.join(15)
        assert not running.thread.is_alive()
        assert running.is_idle_with_all_blocks_free()
