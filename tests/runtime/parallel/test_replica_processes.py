"""A replica's pods as processes on loopback, started from the command lines the operator
renders: the leader answers the OpenAI API, the other pods run headless; a rank that dies
ends the replica with an error the client sees; ranks that never join are named."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from factories import make_manifest
from r1_operator.api import DeepSeekDeployment
from r1_operator.render import probes as operator_probes
from r1_operator.render import render
from r1_runtime.distributed.group import free_port
from render_support import container, of_kind

from ..server.harness import wait_until
from .pods import local_ranks, running_pods, substitute

pytestmark = pytest.mark.slow

EXIT_TIMEOUT_S = 60
# Two pods of one rank each: pipeline stage 0 on the leader, stage 1 on the worker, as the
# R1 example splits its stages over two nodes.
SPEC = {
    "resources": {"gpus": 1},
    "parallelism": {"tensor": 1, "pipeline": 2, "nodes": 2},
    "engine": {"backend": "eager", "maxModelLen": 512, "maxNumSeqs": 4, "maxBatchTokens": 64},
}


def rendered_group(spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The LeaderWorkerSet's leader worker template and settings.json, as rendered."""
    rendered = render(DeepSeekDeployment.from_manifest(make_manifest(spec)))
    lws = of_kind(rendered, "LeaderWorkerSet")[0]
    settings = of_kind(rendered, "ConfigMap")[0]["data"]["settings.json"]
    return lws["spec"]["leaderWorkerTemplate"], settings


def pod_command(
    template: dict[str, Any], worker_index: int, mounts: dict[str, Path], ports: dict[str, int]
) -> tuple[list[str], dict[str, str], int]:
    """A pod's args and env with the LWS variables substituted (leader on 127.0.0.1), its
    mounts mapped to local directories and its ports to free ones."""
    runtime = container(template)
    lws = {
        "LWS_LEADER_ADDRESS": "127.0.0.1",
        "LWS_WORKER_INDEX": str(worker_index),
        "LWS_GROUP_SIZE": "2",
    }
    env = {item["name"]: substitute(item["value"], lws) for item in runtime["env"]}
    env["MASTER_PORT"] = str(ports["rendezvous"])
    env["HOSTNAME"] = f"r1-lws-0-{worker_index}"
    args = [substitute(arg, lws) for arg in runtime["args"]]
    for mount, local in mounts.items():
        args = [
            str(local) + arg.removeprefix(mount) if arg.startswith(mount) else arg for arg in args
        ]
    port = ports[f"http-{worker_index}"]
    args[args.index("--port") + 1] = str(port)
    args[args.index("--host") + 1] = "127.0.0.1"
    return [*args, "--rendezvous-timeout", "120", "--collective-timeout", "30"], env, port


def group_commands(
    demo_model_dir: Path, tmp_path: Path, spec: dict[str, Any] = SPEC
) -> list[tuple[list[str], dict[str, str], int]]:
    template, settings = rendered_group(spec)
    model_arg = container(template["leaderTemplate"])["args"]
    model_path = model_arg[model_arg.index("--model") + 1]
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "settings.json").write_text(settings)
    mounts = {
        model_path: demo_model_dir,
        "/etc/r1-runtime": config_dir,
        "/cache": tmp_path / "cache",
        "/logs": tmp_path / "logs",
    }
    ports = {"rendezvous": free_port(), "http-0": free_port(), "http-1": free_port()}
    return [
        pod_command(template["leaderTemplate"], 0, mounts, ports),
        pod_command(template["workerTemplate"], 1, mounts, ports),
    ]


def test_the_group_recreates_together_and_its_probes_outlast_the_rendezvous() -> None:
    template, _ = rendered_group(SPEC)
    assert template["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = container(template["leaderTemplate"])
    assert leader["startupProbe"]["httpGet"]["path"] == "/health"  # answers while ranks join
    probe = leader["startupProbe"]
    budget = probe["failureThreshold"] * probe["periodSeconds"]
    assert budget >= operator_probes.FLOOR_SECONDS >= 600  # --rendezvous-timeout's default


def test_the_rendered_two_pod_group_answers_from_the_leader(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    commands = group_commands(demo_model_dir, tmp_path)
    model = json.loads((tmp_path / "etc" / "settings.json").read_text())["servedModelName"]
    with running_pods(commands, tmp_path) as (leader, worker):
        leader.wait_ready()
        wait_until(lambda: worker.status("/ready") == 200, 30)
        assert worker.status("/v1/models") == 404  # headless: no API
        assert b"r1_runtime:phase" in httpx.get(f"{worker.base}/metrics").content
        reply = httpx.post(
            f"{leader.base}/v1/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 12,
                "temperature": 0,
            },
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] > 0
        leader.process.send_signal(signal.SIGTERM)
        assert leader.process.wait(EXIT_TIMEOUT_S) == 0
        assert worker.process.wait(EXIT_TIMEOUT_S) == 0, worker.tail()
    assert "joined" in (tmp_path / "logs" / "r1-lws-0-1" / "runtime.log").read_text()


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(signal.SIGKILL, id="a rank killed"),
        pytest.param(signal.SIGSTOP, id="a rank hung: the collective times out"),
    ],
)
def test_a_rank_lost_mid_stream_ends_the_replica(
    demo_model_dir: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """TP2 in one pod: its second rank is a child process of the pod's."""
    port = free_port()
    args = [
        *("serve", "--model", str(demo_model_dir), "--served-model-name", "demo"),
        *("--port", str(port), "--tensor-parallel-size", "2", "--device", "cpu"),
        *("--max-model-len", "512", "--num-kv-blocks", "64", "--collective-timeout", "5"),
    ]
    with running_pods([(args, {}, port)], tmp_path) as (pod,):
        pod.wait_ready()
        (rank,) = local_ranks(pod)
        body = {"model": "demo", "prompt": "Go", "max_tokens": 400, "stream": True,
                "temperature": 0, "ignore_eos": True}  # fmt: skip
        started = time.monotonic()
        with (
            httpx.Client(base_url=pod.base, timeout=60) as http,
            http.stream("POST", "/v1/completions", json=body) as stream,
        ):
            events = stream.iter_lines()
            next(events)
            os.kill(rank, sig)
            rest = [line for line in events if line]
        assert any('"error"' in line for line in rest), rest[-3:]
        assert pod.status("/ready") != 200  # 503 "failed" until it exits, then nothing
        status = pod.process.wait(EXIT_TIMEOUT_S)
        assert status != 0
        assert time.monotonic() - started < 5 + EXIT_TIMEOUT_S
    assert "engine step failed" in pod.log.read_text()


def test_the_leader_names_the_ranks_that_never_joined(demo_model_dir: Path, tmp_path: Path) -> None:
    (leader_args, env, port), _ = group_commands(demo_model_dir, tmp_path)
    leader_args = [*leader_args, "--rendezvous-timeout", "3"]
    with running_pods([(leader_args, env, port)], tmp_path) as (leader,):
        wait_until(lambda: leader.status("/health") == 200, 60)
        assert leader.status("/ready") == 503
        assert leader.process.wait(EXIT_TIMEOUT_S) == 1
    assert "ranks [1] never joined within 3 s" in leader.log.read_text()
    assert "LWS_WORKER_INDEX [1]" in leader.log.read_text()


def test_a_worker_pod_without_its_leader_gives_up(demo_model_dir: Path, tmp_path: Path) -> None:
    _, (worker_args, env, port) = group_commands(demo_model_dir, tmp_path)
    with running_pods([([*worker_args, "--rendezvous-timeout", "3"], env, port)], tmp_path) as (
        worker,
    ):
        wait_until(lambda: worker.status("/health") == 200, 60)
        assert worker.status("/ready") == 503
        assert worker.process.wait(EXIT_TIMEOUT_S) == 1
    assert "could not reach the rendezvous" in worker.log.read_text()
